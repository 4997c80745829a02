//! `meshctl capture`: the distributed tcpdump. The coordinator arms a
//! capture on every requested probe interface at one instant; each probe
//! streams its pcapng file back in checksummed chunks, which land in
//! `OUT/RUN_ID/<name>` once the whole file is verified; then the files are
//! merged into `OUT/RUN_ID/merged.pcapng` on the coordinator's clock.
//!
//! Three parts, I/O at the edges:
//! - [`CapturePoint`]: one `--on` entry, parsed and checked locally (the
//!   coordinator checks it again against the probes it knows);
//! - the artifact assembler: chunks → `.part` file → verified final file,
//!   never a partial file under a final name;
//! - [`merge_captures`]: a pure function from pcapng bytes to one pcapng
//!   stream on the common clock.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{Block, PcapNgParser, PcapNgWriter};
use pcap_file::{Endianness, PcapError};
use probemesh_model::timeline;
use probemesh_proto::pb;
use probemesh_proto::pb::task_progress::Event;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::client::{Endpoint, Failure, exit};
use crate::output::{OutputFormat, emit, run_footer};

/// Snap length when neither `--snaplen` nor `--payload` is given: enough
/// for Ethernet + IP + TCP headers with options, or a VXLAN outer header
/// plus the inner headers.
pub const DEFAULT_SNAPLEN: u32 = 128;
/// Snap length for `--payload` (whole packets), as tcpdump's default.
pub const PAYLOAD_SNAPLEN: u32 = 262_144;
/// Longest capture the coordinator accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Name of the merged file inside `OUT/RUN_ID`.
pub const MERGED_NAME: &str = "merged.pcapng";
/// Shortest gap between two progress lines on stderr.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// `if_tsresol` = 9: timestamps count nanoseconds.
const NANOSECONDS: u8 = 9;
/// `if_tsresol` when an interface block does not say (microseconds).
const DEFAULT_TSRESOL: u8 = 6;
/// Longest Linux interface name (IFNAMSIZ without the NUL).
const MAX_IFNAME: usize = 15;
/// Suffix of an artifact still being received.
const PART_SUFFIX: &str = ".part";

const AFTER_HELP: &str = "\
Capture is headers-only by default: each packet is cut to 128 bytes, enough for
the Ethernet, IP and TCP/UDP headers (and a VXLAN outer header with the inner
ones), because payloads can hold passwords and tokens. --payload asks for whole
packets; the coordinator refuses it unless your identity's role allows it.

Every observer arms at the same instant, chosen by the coordinator; each file
is pcapng with nanosecond timestamps on the probe's clock, one interface block
named PROBE/IFACE. merged.pcapng holds every observer's packets on the
coordinator's clock (each probe's timestamps minus its clock offset), so the
order of hops is causal within the reported clock error.

Files land in OUT/RUN_ID/ (directory 0700, files 0600) only once their size
and SHA-256 match what the probe announced; nothing partial is left behind.

Examples:
  meshctl capture --on cloudvm-1:eth0,node-1:eth0,node-2:flannel.1 \\
      --filter 'tcp port 30080' --duration 5s
  meshctl capture --on node-1 --on node-2:cni0 --filter icmp --duration 10s --out /tmp/caps
  meshctl capture --on node-1@pod:default/web-0:eth0 --duration 3s --max-packets 1000

Exit: 0 every observer captured, 1 an observer failed, 2 bad input,
3 inconclusive, 4 coordinator unreachable.";

/// `meshctl capture`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct CaptureArgs {
    /// Where to capture: PROBE[:IFACE] or PROBE@pod:NS/NAME[:IFACE] (no IFACE:
    /// the probe's primary interface). Comma-separated, repeatable.
    #[arg(long = "on", value_name = "PROBE[:IFACE]", value_delimiter = ',', required = true, value_parser = parse_capture_point)]
    pub on: Vec<CapturePoint>,
    /// tcpdump filter expression, compiled by the coordinator ("" = every packet).
    #[arg(long, value_name = "EXPR", default_value = "")]
    pub filter: String,
    /// How long to capture (e.g. 5s, 1m; at most 10m).
    #[arg(long, value_name = "DUR", value_parser = parse_capture_duration)]
    pub duration: Duration,
    /// Directory for the files; each run gets OUT/RUN_ID/.
    #[arg(long, value_name = "DIR", default_value = "./captures")]
    pub out: PathBuf,
    /// Bytes kept per packet [default: 128, headers only; 262144 with --payload].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(PAYLOAD_SNAPLEN)))]
    pub snaplen: Option<u32>,
    /// Keep whole packets, payload included (refused unless policy allows it).
    #[arg(long)]
    pub payload: bool,
    /// Stop each observer after this many packets [coordinator default: 10000000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_packets: Option<u64>,
    /// Stop each observer when its file reaches this many bytes [coordinator default: 2 GiB].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: Option<u64>,
}

impl CaptureArgs {
    fn request(&self) -> pb::RunRequest {
        let snaplen = self.snaplen.unwrap_or(if self.payload {
            PAYLOAD_SNAPLEN
        } else {
            DEFAULT_SNAPLEN
        });
        pb::RunRequest {
            from: String::new(),
            kind: Some(pb::run_request::Kind::Capture(pb::CaptureRequest {
                on: self.on.iter().map(ToString::to_string).collect(),
                filter: self.filter.clone(),
                duration_us: u64::try_from(self.duration.as_micros()).unwrap_or(u64::MAX),
                snaplen,
                payload: self.payload,
                max_packets: self.max_packets.unwrap_or(0),
                max_bytes: self.max_bytes.unwrap_or(0),
            })),
        }
    }
}

fn parse_capture_duration(s: &str) -> Result<Duration, String> {
    let d = crate::parse_duration_arg(s)?;
    if d.is_zero() {
        return Err("a capture needs a duration above zero".into());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{s} is longer than the {}-minute limit",
            MAX_DURATION.as_secs() / 60
        ));
    }
    Ok(d)
}

// ------------------------------------------------------------------ --on

/// One `--on` entry: a probe, optionally a pod's network namespace on it,
/// optionally an interface. Shown (and sent) as
/// `PROBE[@pod:NS/NAME][:IFACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePoint {
    probe: String,
    pod: Option<(String, String)>,
    interface: Option<String>,
}

impl fmt::Display for CapturePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.probe)?;
        if let Some((namespace, name)) = &self.pod {
            write!(f, "@pod:{namespace}/{name}")?;
        }
        if let Some(interface) = &self.interface {
            write!(f, ":{interface}")?;
        }
        Ok(())
    }
}

fn parse_capture_point(s: &str) -> Result<CapturePoint, String> {
    let s = s.trim();
    let word = |what: &str, w: &str| -> Result<String, String> {
        if w.is_empty() {
            return Err(format!("{s:?}: the {what} is empty"));
        }
        if w.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | ':' | '@' | ','))
        {
            return Err(format!("{s:?}: {w:?} is not a valid {what}"));
        }
        Ok(w.to_owned())
    };
    let interface = |i: Option<&str>| -> Result<Option<String>, String> {
        let Some(i) = i else { return Ok(None) };
        let i = word("interface", i)?;
        if i.len() > MAX_IFNAME {
            return Err(format!(
                "{s:?}: interface {i:?} is longer than {MAX_IFNAME} bytes"
            ));
        }
        Ok(Some(i))
    };
    match s.split_once('@') {
        None => {
            let (probe, iface) = match s.split_once(':') {
                Some((p, i)) => (p, Some(i)),
                None => (s, None),
            };
            Ok(CapturePoint {
                probe: word("probe name", probe)?,
                pod: None,
                interface: interface(iface)?,
            })
        }
        Some((probe, rest)) => {
            let pod = rest
                .strip_prefix("pod:")
                .ok_or_else(|| format!("{s:?}: expected PROBE@pod:NAMESPACE/NAME[:IFACE]"))?;
            let (namespace, rest) = pod
                .split_once('/')
                .ok_or_else(|| format!("{s:?}: expected PROBE@pod:NAMESPACE/NAME[:IFACE]"))?;
            let (name, iface) = match rest.split_once(':') {
                Some((n, i)) => (n, Some(i)),
                None => (rest, None),
            };
            Ok(CapturePoint {
                probe: word("probe name", probe)?,
                pod: Some((word("namespace", namespace)?, word("pod name", name)?)),
                interface: interface(iface)?,
            })
        }
    }
}

// ------------------------------------------------------------- progress

/// What stderr shows while the capture runs: per observer, its armed
/// interfaces and its latest counters.
#[derive(Debug, Default)]
struct ProgressBoard {
    observers: BTreeMap<String, ObserverProgress>,
    last_line: Option<Instant>,
}

#[derive(Debug, Default)]
struct ObserverProgress {
    interfaces: Vec<String>,
    packets: u64,
    drops: u64,
}

impl ProgressBoard {
    /// Records the event; returns a line to print when one is due
    /// (armed announcements at once, counters at most every 500 ms).
    fn update(&mut self, probe: &str, event: &Event, now: Instant) -> Option<String> {
        match event {
            Event::CaptureArmed(armed) => {
                let names: Vec<String> = armed
                    .interfaces
                    .iter()
                    .map(|i| short_interface(probe, &i.interface).to_owned())
                    .collect();
                let line = format!("{probe}: armed {}", names.join(", "));
                self.observers
                    .entry(probe.to_owned())
                    .or_default()
                    .interfaces = names;
                Some(line)
            }
            Event::CaptureProgress(p) => {
                let o = self.observers.entry(probe.to_owned()).or_default();
                o.packets = p.packets;
                o.drops = p.drops;
                let due = self
                    .last_line
                    .is_none_or(|last| now.saturating_duration_since(last) >= PROGRESS_EVERY);
                due.then(|| {
                    self.last_line = Some(now);
                    self.line()
                })
            }
            _ => None,
        }
    }

    /// `node-1/eth0 1234 pkts 0 drops · node-2/flannel.1 17 pkts 0 drops`
    fn line(&self) -> String {
        self.observers
            .iter()
            .map(|(probe, o)| {
                let label = if o.interfaces.is_empty() {
                    probe.clone()
                } else {
                    format!("{probe}/{}", o.interfaces.join("+"))
                };
                format!("{label} {} pkts {} drops", o.packets, o.drops)
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// `eth0` from `node-1/eth0` (probes name interfaces either way).
fn short_interface<'a>(probe: &str, interface: &'a str) -> &'a str {
    interface
        .strip_prefix(probe)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(interface)
}

// ------------------------------------------------------------ artifacts

/// Why an artifact was rejected. Its `.part` file is deleted whenever one
/// of these is raised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ArtifactError {
    #[error("artifact name {name:?} is not a plain file name")]
    BadName { name: String },
    #[error("{name}: chunk at offset {got}, expected offset {expected} (a chunk went missing)")]
    Gap {
        name: String,
        expected: u64,
        got: u64,
    },
    #[error("{name}: chunk at offset {offset} fails its SHA-256 check (corrupted in transit)")]
    ChunkDigest { name: String, offset: u64 },
    #[error("{name}: sent by both {first} and {second}")]
    TwoSenders {
        name: String,
        first: String,
        second: String,
    },
    #[error("{name}: received {got} bytes, the probe announced {expected}")]
    Size {
        name: String,
        expected: u64,
        got: u64,
    },
    #[error("{name}: SHA-256 of the received file is {got}, the probe announced {expected}")]
    Digest {
        name: String,
        expected: String,
        got: String,
    },
    #[error("{name}: announced but no data arrived")]
    Missing { name: String },
    #[error("{name}: the run ended before the probe announced the file complete")]
    Unfinished { name: String },
    #[error("{name}: cannot {op} {}: {message}", path.display())]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// A `.part` file being appended to; dropping it deletes the `.part`
/// (after a successful [`PartFile::commit`] there is nothing left to delete).
#[derive(Debug)]
struct PartFile {
    path: PathBuf,
    file: File,
    received: u64,
    hasher: Sha256,
}

impl PartFile {
    fn create(path: PathBuf) -> io::Result<Self> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            path,
            file,
            received: 0,
            hasher: Sha256::new(),
        })
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.received += data.len() as u64;
        Ok(())
    }

    fn commit(self, to: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, to)
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Where one artifact stands. Transitions: `Receiving` → `Saved` when the
/// probe's result announces a matching size and SHA-256; `Receiving` →
/// `Failed` on any bad chunk or mismatch (the `.part` is deleted).
#[derive(Debug)]
enum ArtifactState {
    /// Chunks arrive in order and are appended to `<name>.part`.
    Receiving(PartFile),
    /// Verified and renamed to its final name.
    Saved(PathBuf),
    /// Rejected; later chunks are ignored.
    Failed(ArtifactError),
}

#[derive(Debug)]
struct Artifact {
    probe: String,
    state: ArtifactState,
}

/// Every artifact of a run, in one directory.
#[derive(Debug)]
struct Artifacts {
    dir: PathBuf,
    items: BTreeMap<String, Artifact>,
}

impl Artifacts {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            items: BTreeMap::new(),
        }
    }

    /// Appends a chunk sent by `probe`. An error fails the artifact (and
    /// deletes its `.part`); later chunks of a failed artifact are ignored.
    fn accept(&mut self, probe: &str, chunk: &pb::ArtifactChunk) -> Result<(), ArtifactError> {
        let name = checked_name(&chunk.name)?;
        let dir = &self.dir;
        let artifact = self.items.entry(name.to_owned()).or_insert_with(|| {
            let path = dir.join(format!("{name}{PART_SUFFIX}"));
            let state = match PartFile::create(path.clone()) {
                Ok(part) => ArtifactState::Receiving(part),
                Err(e) => ArtifactState::Failed(io_error(name, "create", &path, &e)),
            };
            Artifact {
                probe: probe.to_owned(),
                state,
            }
        });
        let result = match &mut artifact.state {
            // Later chunks of a rejected (or already saved) artifact change nothing.
            ArtifactState::Failed(_) | ArtifactState::Saved(_) => return Ok(()),
            _ if artifact.probe != probe => Err(ArtifactError::TwoSenders {
                name: name.to_owned(),
                first: artifact.probe.clone(),
                second: probe.to_owned(),
            }),
            ArtifactState::Receiving(part) => append_chunk(name, part, chunk),
        };
        if let Err(e) = &result {
            artifact.state = ArtifactState::Failed(e.clone());
        }
        result
    }

    /// The probe's result announced `info`: verify and move the file to
    /// its final name, or delete it.
    fn finish(&mut self, probe: &str, info: &pb::ArtifactInfo) -> Result<PathBuf, ArtifactError> {
        let name = checked_name(&info.name)?;
        let Some(artifact) = self.items.get_mut(name) else {
            return Err(ArtifactError::Missing {
                name: name.to_owned(),
            });
        };
        if artifact.probe != probe {
            return Err(ArtifactError::TwoSenders {
                name: name.to_owned(),
                first: artifact.probe.clone(),
                second: probe.to_owned(),
            });
        }
        let placeholder = ArtifactState::Failed(ArtifactError::Unfinished {
            name: name.to_owned(),
        });
        let outcome = match std::mem::replace(&mut artifact.state, placeholder) {
            ArtifactState::Failed(e) => Err(e),
            ArtifactState::Saved(path) => Ok(path),
            ArtifactState::Receiving(part) => verify_and_commit(name, part, info, &self.dir),
        };
        artifact.state = match &outcome {
            Ok(path) => ArtifactState::Saved(path.clone()),
            Err(e) => ArtifactState::Failed(e.clone()),
        };
        outcome
    }

    /// Fails every artifact no result announced (deleting its `.part`).
    fn abandon_unfinished(&mut self) {
        for (name, artifact) in &mut self.items {
            if matches!(artifact.state, ArtifactState::Receiving(_)) {
                artifact.state =
                    ArtifactState::Failed(ArtifactError::Unfinished { name: name.clone() });
            }
        }
    }
}

fn append_chunk(
    name: &str,
    part: &mut PartFile,
    chunk: &pb::ArtifactChunk,
) -> Result<(), ArtifactError> {
    if chunk.offset != part.received {
        return Err(ArtifactError::Gap {
            name: name.to_owned(),
            expected: part.received,
            got: chunk.offset,
        });
    }
    if Sha256::digest(&chunk.data).as_slice() != chunk.sha256.as_slice() {
        return Err(ArtifactError::ChunkDigest {
            name: name.to_owned(),
            offset: chunk.offset,
        });
    }
    part.append(&chunk.data)
        .map_err(|e| io_error(name, "write", &part.path, &e))
}

fn verify_and_commit(
    name: &str,
    part: PartFile,
    info: &pb::ArtifactInfo,
    dir: &Path,
) -> Result<PathBuf, ArtifactError> {
    if part.received != info.size_bytes {
        return Err(ArtifactError::Size {
            name: name.to_owned(),
            expected: info.size_bytes,
            got: part.received,
        });
    }
    let digest = part.hasher.clone().finalize();
    if digest.as_slice() != info.sha256.as_slice() {
        return Err(ArtifactError::Digest {
            name: name.to_owned(),
            expected: hex::encode(&info.sha256),
            got: hex::encode(digest),
        });
    }
    let path = dir.join(name);
    part.commit(&path)
        .map_err(|e| io_error(name, "save", &path, &e))?;
    Ok(path)
}

/// The name as a plain file name inside the run directory, or an error:
/// no separators, no hidden or reserved names.
fn checked_name(name: &str) -> Result<&str, ArtifactError> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.ends_with(PART_SUFFIX)
        && name != MERGED_NAME
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if plain {
        Ok(name)
    } else {
        Err(ArtifactError::BadName {
            name: name.to_owned(),
        })
    }
}

fn io_error(name: &str, op: &'static str, path: &Path, e: &io::Error) -> ArtifactError {
    ArtifactError::Io {
        name: name.to_owned(),
        op,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

// ---------------------------------------------------------------- merge

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
        /// What the parser said.
        source: PcapError,
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

    let section = SectionHeaderBlock {
        endianness: Endianness::Little,
        major_version: 1,
        minor_version: 0,
        section_length: -1,
        options: vec![
            SectionHeaderOption::Comment(Cow::Owned(merged_comment(inputs, header))),
            SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "meshctl {}",
                env!("CARGO_PKG_VERSION")
            ))),
        ],
    };
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

/// How one input interface's timestamps read.
#[derive(Debug, Clone, Copy)]
struct InputInterface {
    merged_id: u32,
    tsresol: u8,
    tsoffset_s: u64,
}

fn read_input<'a>(
    input: &MergeInput<'a>,
    interfaces: &mut Vec<InterfaceDescriptionBlock<'static>>,
    packets: &mut Vec<MergedPacket<'a>>,
) -> Result<(), MergeError> {
    let parse = |source| MergeError::Parse {
        probe: input.probe.to_owned(),
        source,
    };
    let (mut rest, mut parser) = PcapNgParser::new(input.pcapng).map_err(parse)?;
    // Interface ids restart with every section.
    let mut local: Vec<InputInterface> = Vec::new();
    while !rest.is_empty() {
        let (remainder, block) = parser.next_block(rest).map_err(parse)?;
        rest = remainder;
        match block {
            Block::SectionHeader(_) => local.clear(),
            Block::InterfaceDescription(idb) => {
                let merged_id = u32::try_from(interfaces.len())
                    .map_err(|_| parse(PcapError::InvalidField("too many interfaces")))?;
                let (idb, tsresol, tsoffset_s) = merged_interface(input.probe, local.len(), idb);
                interfaces.push(idb);
                local.push(InputInterface {
                    merged_id,
                    tsresol,
                    tsoffset_s,
                });
            }
            Block::EnhancedPacket(mut epb) => {
                let Some(iface) = usize::try_from(epb.interface_id)
                    .ok()
                    .and_then(|i| local.get(i))
                else {
                    return Err(MergeError::UnknownInterface {
                        probe: input.probe.to_owned(),
                        interface: epb.interface_id,
                    });
                };
                // pcap-file hands the raw timestamp over as if it counted
                // nanoseconds; it counts the interface's unit.
                let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                let at_ns = timeline::pcapng_ns(raw, iface.tsresol, iface.tsoffset_s)
                    - i128::from(timeline::correction_ns(
                        input.clock_offset_ns,
                        input.clock_error_ns,
                    ));
                epb.interface_id = iface.merged_id;
                epb.timestamp =
                    Duration::from_nanos(u64::try_from(at_ns.max(0)).unwrap_or(u64::MAX));
                packets.push(MergedPacket { at_ns, block: epb });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The input interface block as the merged file writes it, with the
/// input's timestamp resolution and offset (seconds).
fn merged_interface(
    probe: &str,
    index: usize,
    idb: InterfaceDescriptionBlock<'_>,
) -> (InterfaceDescriptionBlock<'static>, u8, u64) {
    let mut tsresol = DEFAULT_TSRESOL;
    let mut tsoffset_s = 0;
    let mut named = false;
    let mut options = Vec::with_capacity(idb.options.len() + 1);
    for option in idb.options {
        match option {
            InterfaceDescriptionOption::IfTsResol(r) => tsresol = r,
            InterfaceDescriptionOption::IfTsOffset(s) => tsoffset_s = s,
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
        options.insert(
            0,
            InterfaceDescriptionOption::IfName(Cow::Owned(format!("{probe}/if{index}"))),
        );
    }
    options.push(InterfaceDescriptionOption::IfTsResol(NANOSECONDS));
    let idb = InterfaceDescriptionBlock {
        linktype: idb.linktype,
        snaplen: idb.snaplen,
        options,
    };
    (idb, tsresol, tsoffset_s)
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

/// Nanoseconds as microseconds with three decimals.
fn ns_to_us(ns: i64) -> f64 {
    // Offsets are far below 2^53 ns.
    #[allow(clippy::cast_precision_loss)]
    let us = ns as f64 / 1e3;
    (us * 1000.0).round() / 1000.0
}

// --------------------------------------------------------------- report

/// The JSON shape of `meshctl capture -o json`.
#[derive(Debug, Serialize)]
pub struct CaptureReport {
    run_id: String,
    trace_id: String,
    filter: String,
    observers: Vec<ObserverView>,
    timing: TimingView,
    /// Every test packet followed across the observers (the coordinator's
    /// correlation).
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation: Option<CorrelationView>,
    /// Saved files, the merged one last.
    artifacts: Vec<String>,
    /// What went wrong for the run as a whole (not one observer).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip)]
    error_kind: Option<Status>,
}

/// The correlation, as printed and in JSON.
#[derive(Debug, Serialize)]
struct CorrelationView {
    fates_total: u64,
    fates: Vec<FateView>,
    encapsulation: Vec<EncapsulationView>,
    undecoded_packets: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    skipped: String,
}

#[derive(Debug, Serialize)]
struct FateView {
    packet: String,
    answered: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    answered_at: String,
    retransmissions: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    lost_after: String,
    hops: Vec<HopView>,
}

#[derive(Debug, Serialize)]
struct HopView {
    observer: String,
    at_unix_ns: i64,
    one_way_us: f64,
    flow: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    outer: String,
    transforms: Vec<String>,
    wire_bytes: u32,
}

#[derive(Debug, Serialize)]
struct EncapsulationView {
    observer: String,
    kind: String,
    outer_src: String,
    outer_dst: String,
    packets: u64,
}

impl From<&pb::CorrelationSummary> for CorrelationView {
    fn from(c: &pb::CorrelationSummary) -> Self {
        Self {
            fates_total: c.fates_total,
            fates: c
                .fates
                .iter()
                .map(|f| FateView {
                    packet: f.packet.clone(),
                    answered: f.answered,
                    answered_at: f.answered_at.clone(),
                    retransmissions: f.retransmissions,
                    lost_after: f.lost_after.clone(),
                    hops: f
                        .hops
                        .iter()
                        .map(|h| HopView {
                            observer: h.observer.clone(),
                            at_unix_ns: h.at_unix_ns,
                            one_way_us: ns_to_us(h.one_way_ns),
                            flow: h.flow.clone(),
                            outer: h.outer.clone(),
                            transforms: h.transforms.clone(),
                            wire_bytes: h.wire_bytes,
                        })
                        .collect(),
                })
                .collect(),
            encapsulation: c
                .encapsulation
                .iter()
                .map(|e| EncapsulationView {
                    observer: e.observer.clone(),
                    kind: e.kind.clone(),
                    outer_src: e.outer_src.clone(),
                    outer_dst: e.outer_dst.clone(),
                    packets: e.packets,
                })
                .collect(),
            undecoded_packets: c.undecoded_packets,
            skipped: c.skipped.clone(),
        }
    }
}

/// Fates printed in table mode (all are in the JSON).
const FATES_SHOWN: usize = 10;

impl CorrelationView {
    fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "packets followed across observers: {} ({} shown, unanswered first)",
            self.fates_total,
            self.fates.len().min(FATES_SHOWN)
        )];
        for f in self.fates.iter().take(FATES_SHOWN) {
            let fate = if f.answered {
                format!("answered at {}", f.answered_at)
            } else {
                format!("NOT answered, last seen at {}", f.lost_after)
            };
            let retrans = if f.retransmissions > 0 {
                format!(", {} retransmissions", f.retransmissions)
            } else {
                String::new()
            };
            lines.push(format!("  {}: {fate}{retrans}", f.packet));
            for h in &f.hops {
                let changes = if h.transforms.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", h.transforms.join("; "))
                };
                lines.push(format!(
                    "    +{:>9.1} us  {:<22} {}{changes}",
                    h.one_way_us, h.observer, h.flow
                ));
            }
        }
        for e in &self.encapsulation {
            lines.push(format!(
                "  {} {} from {} to {} ({} packets)",
                e.observer, e.kind, e.outer_src, e.outer_dst, e.packets
            ));
        }
        if !self.skipped.is_empty() {
            lines.push(format!("  {}", self.skipped));
        }
        lines
    }
}

/// One observer in the report.
#[derive(Debug, Serialize)]
struct ObserverView {
    probe: String,
    interfaces: Vec<InterfaceView>,
    /// Probe clock minus coordinator clock, microseconds.
    clock_offset_us: f64,
    /// Error bound of the offset, microseconds.
    clock_error_us: f64,
    /// Why the capture stopped: duration, packet_limit, byte_limit, stopped.
    stop: Option<&'static str>,
    /// The verified file.
    artifact: Option<String>,
    error: Option<String>,
    #[serde(skip)]
    clock_offset_ns: i64,
    #[serde(skip)]
    clock_error_ns: i64,
    #[serde(skip)]
    status: Status,
}

/// One captured interface of an observer, as printed and in JSON.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceView {
    name: String,
    packets: u64,
    kernel_drops: u64,
    /// When its ring went live, coordinator clock, Unix ns.
    armed_unix_ns: i64,
}

/// A run's clock error, capture skew and duration, as in JSON.
#[derive(Debug, Default, Serialize)]
pub struct TimingView {
    pub(crate) clock_error_us: i64,
    pub(crate) capture_skew_us: i64,
    pub(crate) duration_ms: i64,
}

impl From<&pb::RunRecord> for TimingView {
    /// The record's timing, or just its duration when it has none.
    fn from(record: &pb::RunRecord) -> Self {
        record.timing.map_or(
            TimingView {
                duration_ms: record.duration_ms,
                ..TimingView::default()
            },
            |t| TimingView {
                clock_error_us: t.clock_error_us,
                capture_skew_us: t.capture_skew_us,
                duration_ms: t.duration_ms,
            },
        )
    }
}

impl InterfaceView {
    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How an observer (or the run) ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Captured,
    Failed,
    BadInput,
    Inconclusive,
}

impl Status {
    fn of_error(e: &pb::TaskError) -> Self {
        match e.kind() {
            pb::task_error::Kind::InvalidInput => Status::BadInput,
            pb::task_error::Kind::Cancelled => Status::Inconclusive,
            pb::task_error::Kind::ProbeFailure | pb::task_error::Kind::Unspecified => {
                Status::Failed
            }
        }
    }
}

fn stop_name(stop: pb::CaptureStop) -> Option<&'static str> {
    match stop {
        pb::CaptureStop::Duration => Some("duration"),
        pb::CaptureStop::PacketLimit => Some("packet_limit"),
        pb::CaptureStop::ByteLimit => Some("byte_limit"),
        pb::CaptureStop::Stopped => Some("stopped"),
        pb::CaptureStop::Unspecified => None,
    }
}

impl ObserverView {
    /// The observer's outcome; its artifact (if any) is verified and saved
    /// through `artifacts`.
    fn new(observer: &pb::ObserverResult, artifacts: &mut Artifacts) -> Self {
        let mut view = Self {
            probe: observer.probe.clone(),
            interfaces: observer
                .interfaces
                .iter()
                .map(|name| InterfaceView {
                    name: short_interface(&observer.probe, name).to_owned(),
                    packets: 0,
                    kernel_drops: 0,
                    armed_unix_ns: 0,
                })
                .collect(),
            clock_offset_us: ns_to_us(observer.clock_offset_ns),
            clock_error_us: ns_to_us(observer.clock_error_ns),
            clock_offset_ns: observer.clock_offset_ns,
            clock_error_ns: observer.clock_error_ns,
            stop: None,
            artifact: None,
            error: None,
            status: Status::Inconclusive,
        };
        let outcome = observer.result.as_ref().and_then(|r| r.outcome.as_ref());
        match outcome {
            Some(pb::task_result::Outcome::Capture(c)) => {
                view.stop = stop_name(c.stop());
                if !c.interfaces.is_empty() {
                    view.interfaces = c
                        .interfaces
                        .iter()
                        .map(|s| InterfaceView {
                            name: short_interface(&observer.probe, &s.interface).to_owned(),
                            packets: s.packets_written,
                            kernel_drops: s.kernel_drops,
                            armed_unix_ns: timeline::to_coordinator_ns(
                                s.armed_unix_ns,
                                observer.clock_offset_ns,
                                observer.clock_error_ns,
                            ),
                        })
                        .collect();
                }
                match &c.artifact {
                    Some(info) => match artifacts.finish(&observer.probe, info) {
                        Ok(path) => {
                            view.artifact = Some(path.display().to_string());
                            view.status = Status::Captured;
                        }
                        Err(e) => {
                            view.error = Some(e.to_string());
                            view.status = Status::Failed;
                        }
                    },
                    None => {
                        view.error = Some("the probe announced no capture file".into());
                        view.status = Status::Failed;
                    }
                }
            }
            Some(pb::task_result::Outcome::Error(e)) => {
                view.error = Some(e.message.clone());
                view.status = Status::of_error(e);
            }
            Some(_) => {
                view.error = Some("the probe answered with something other than a capture".into());
                view.status = Status::Failed;
            }
            None => view.error = Some("no result from this probe".into()),
        }
        view
    }
}

impl CaptureReport {
    fn new(
        accepted: &pb::RunAccepted,
        record: &pb::RunRecord,
        filter: &str,
        artifacts: &mut Artifacts,
    ) -> Self {
        let observers: Vec<ObserverView> = record
            .observers
            .iter()
            .map(|o| ObserverView::new(o, artifacts))
            .collect();
        artifacts.abandon_unfinished();
        let timing = TimingView::from(record);
        let (error, error_kind) = match record.result.as_ref().and_then(|r| r.outcome.as_ref()) {
            Some(pb::task_result::Outcome::Error(e)) => {
                (Some(e.message.clone()), Some(Status::of_error(e)))
            }
            _ if observers.is_empty() => (
                Some("the run ended without any observer's result".into()),
                Some(Status::Inconclusive),
            ),
            _ => (None, None),
        };
        Self {
            run_id: if accepted.run_id.is_empty() {
                record.run_id.clone()
            } else {
                accepted.run_id.clone()
            },
            trace_id: if accepted.trace_id.is_empty() {
                record.trace_id.clone()
            } else {
                accepted.trace_id.clone()
            },
            filter: filter.to_owned(),
            observers,
            timing,
            correlation: record.correlation.as_ref().map(CorrelationView::from),
            artifacts: Vec::new(),
            error,
            error_kind,
        }
    }

    /// Records a failure of the command itself (merge, moving files).
    fn fail(&mut self, message: String) {
        self.error = Some(match self.error.take() {
            Some(earlier) => format!("{earlier}; {message}"),
            None => message,
        });
        if self.error_kind != Some(Status::BadInput) {
            self.error_kind = Some(Status::Failed);
        }
    }

    /// Rewrites artifact paths from the staging directory to `dir`.
    fn relocate(&mut self, staging: &Path, dir: &Path) {
        let moved = |p: &str| {
            Path::new(p).strip_prefix(staging).map_or_else(
                |_| p.to_owned(),
                |rest| dir.join(rest).display().to_string(),
            )
        };
        for o in &mut self.observers {
            o.artifact = o.artifact.as_deref().map(moved);
        }
        self.artifacts = self.artifacts.iter().map(|p| moved(p)).collect();
    }

    /// Saved files, the merged one last.
    pub fn artifacts(&self) -> &[String] {
        &self.artifacts
    }

    /// Per observer: the probe, its interfaces, and why it has no file.
    pub fn observer_summaries(
        &self,
    ) -> impl Iterator<Item = (&str, &[InterfaceView], Option<&str>)> {
        self.observers.iter().map(|o| {
            (
                o.probe.as_str(),
                o.interfaces.as_slice(),
                o.error.as_deref(),
            )
        })
    }

    /// Why the files could not all be kept, when they could not.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn saved(&self) -> impl Iterator<Item = (&ObserverView, &str)> {
        self.observers
            .iter()
            .filter_map(|o| o.artifact.as_deref().map(|a| (o, a)))
    }

    /// 0 every observer captured; 2 an observer (or the run) refused the
    /// input; 1 an observer failed or the merge did; 3 otherwise inconclusive.
    pub fn exit_code(&self) -> u8 {
        let statuses: Vec<Status> = self
            .observers
            .iter()
            .map(|o| o.status)
            .chain(self.error_kind)
            .collect();
        if statuses.contains(&Status::BadInput) {
            exit::USAGE
        } else if statuses.contains(&Status::Failed) {
            exit::FAULT
        } else if statuses.contains(&Status::Inconclusive) || self.observers.is_empty() {
            exit::INCONCLUSIVE
        } else {
            exit::OK
        }
    }

    /// The report as printed.
    pub fn table_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{:<14} {:<16} {:>10} {:>8}  {:<13} FILE",
            "PROBE", "INTERFACE", "PACKETS", "DROPS", "STOP"
        )];
        for o in &self.observers {
            let stop = o
                .stop
                .unwrap_or(if o.error.is_some() { "failed" } else { "-" });
            let file = o.artifact.as_deref().unwrap_or("-");
            if o.interfaces.is_empty() {
                lines.push(format!(
                    "{:<14} {:<16} {:>10} {:>8}  {:<13} {file}",
                    o.probe, "-", "-", "-", stop
                ));
            }
            for i in &o.interfaces {
                lines.push(format!(
                    "{:<14} {:<16} {:>10} {:>8}  {:<13} {file}",
                    o.probe, i.name, i.packets, i.kernel_drops, stop
                ));
            }
        }
        for o in &self.observers {
            if let Some(e) = &o.error {
                lines.push(format!("{}: {e}", o.probe));
            }
        }
        if let Some(e) = &self.error {
            lines.push(format!("capture: {e}"));
        }
        lines.push(format!(
            "timing: clock error ±{} us, capture skew {} us, duration {} ms",
            self.timing.clock_error_us, self.timing.capture_skew_us, self.timing.duration_ms
        ));
        if let Some(c) = &self.correlation {
            lines.extend(c.lines());
        }
        lines.extend(run_footer(&self.artifacts, &self.run_id, &self.trace_id));
        lines
    }
}

// ------------------------------------------------------------------ run

/// Runs `meshctl capture`: streams the run, saves and verifies each
/// observer's file, merges them, prints the report; returns the exit code.
pub async fn run(
    args: CaptureArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    let mut files = CaptureFiles::new(&args.out)?;
    let (accepted, record) = super::stream_run(args.request(), endpoint, |progress| {
        if let Some(line) = files.progress(&progress) {
            eprintln!("{line}");
        }
    })
    .await?;
    let report = files.finish(&accepted, &record, &args.filter);
    emit(output, &report, || report.table_lines())?;
    Ok(report.exit_code())
}

/// A run's capture files as they arrive: chunks land in a staging
/// directory under `--out`, verified files move to `OUT/RUN_ID/` with
/// `merged.pcapng` beside them. Used by every command whose runs capture.
#[derive(Debug)]
pub struct CaptureFiles {
    out: PathBuf,
    staging: tempfile::TempDir,
    artifacts: Artifacts,
    board: ProgressBoard,
}

impl CaptureFiles {
    /// A staging directory under `out` (created if needed).
    pub fn new(out: &Path) -> Result<Self, Failure> {
        let staging = staging_dir(out)?;
        Ok(Self {
            out: out.to_path_buf(),
            artifacts: Artifacts::new(staging.path().to_path_buf()),
            staging,
            board: ProgressBoard::default(),
        })
    }

    /// Takes one progress event: appends artifact chunks, and returns a
    /// progress line to print when one is due.
    pub fn progress(&mut self, progress: &pb::TaskProgress) -> Option<String> {
        let event = progress.event.as_ref()?;
        if let Event::ArtifactChunk(chunk) = event {
            if let Err(e) = self.artifacts.accept(&progress.probe, chunk) {
                return Some(format!("capture: {}: {e}; discarding it", progress.probe));
            }
            return None;
        }
        self.board.update(&progress.probe, event, Instant::now())
    }

    /// Verifies and saves every observer's file, merges them, and moves
    /// them to `OUT/RUN_ID/`; the report says what was saved and what failed.
    pub fn finish(
        mut self,
        accepted: &pb::RunAccepted,
        record: &pb::RunRecord,
        filter: &str,
    ) -> CaptureReport {
        let mut report = CaptureReport::new(accepted, record, filter, &mut self.artifacts);
        report.artifacts = report.saved().map(|(_, a)| a.to_owned()).collect();
        if report.artifacts.is_empty() {
            return report;
        }
        match write_merged(&report, self.staging.path()) {
            Ok(path) => report.artifacts.push(path.display().to_string()),
            Err(e) => report.fail(e),
        }
        // The files are verified: from here on they are kept, under the run
        // id when it is a plain name and the move succeeds, else where they are.
        let staging_path = self.staging.keep();
        let dir = self.out.join(&report.run_id);
        let moved = if checked_name(&report.run_id).is_err() {
            Err(format!(
                "the run id {:?} is not a plain name",
                report.run_id
            ))
        } else {
            fs::rename(&staging_path, &dir).map_err(|e| e.to_string())
        };
        match moved {
            Ok(()) => report.relocate(&staging_path, &dir),
            Err(e) => report.fail(format!(
                "cannot move the captures to {}: {e}; they are in {}",
                dir.display(),
                staging_path.display()
            )),
        }
        report
    }
}

/// A fresh 0700 directory under `out` (created if needed) that receives
/// the `.part` files; it becomes `out/RUN_ID` at the end, and is deleted
/// with everything in it if the command fails before.
fn staging_dir(out: &Path) -> Result<tempfile::TempDir, Failure> {
    let usage = |e: io::Error| Failure::usage(format!("cannot use --out {}: {e}", out.display()));
    fs::create_dir_all(out).map_err(usage)?;
    let dir = tempfile::Builder::new()
        .prefix(".capture-")
        .tempdir_in(out)
        .map_err(usage)?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).map_err(usage)?;
    Ok(dir)
}

/// Merges the saved files into `dir/merged.pcapng` (0600, written under a
/// `.part` name and renamed once complete).
fn write_merged(report: &CaptureReport, dir: &Path) -> Result<PathBuf, String> {
    let mut files = Vec::new();
    for (observer, path) in report.saved() {
        let bytes = fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        files.push((observer, bytes));
    }
    let inputs: Vec<MergeInput<'_>> = files
        .iter()
        .map(|(o, bytes)| MergeInput {
            probe: &o.probe,
            clock_offset_ns: o.clock_offset_ns,
            clock_error_ns: o.clock_error_ns,
            pcapng: bytes,
        })
        .collect();
    let path = dir.join(MERGED_NAME);
    let mut part = PartFile::create(dir.join(format!("{MERGED_NAME}{PART_SUFFIX}")))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let header = MergeHeader {
        run_id: &report.run_id,
        filter: &report.filter,
    };
    merge_captures(&inputs, header, io::BufWriter::new(&mut part.file))
        .map_err(|e| e.to_string())?;
    part.commit(&path)
        .map_err(|e| format!("cannot save {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::DataLink;
    use pcap_file::pcapng::PcapNgReader;
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
                        InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
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
        timeline::pcapng_ns(raw, tsresol, tsoffset_s)
    }

    // ------------------------------------------------------- artifacts

    fn chunk(name: &str, offset: u64, data: &[u8]) -> pb::ArtifactChunk {
        pb::ArtifactChunk {
            name: name.into(),
            offset,
            data: data.to_vec(),
            sha256: Sha256::digest(data).to_vec(),
        }
    }

    fn info(name: &str, content: &[u8]) -> pb::ArtifactInfo {
        pb::ArtifactInfo {
            name: name.into(),
            size_bytes: content.len() as u64,
            sha256: Sha256::digest(content).to_vec(),
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn chunks_in_order_become_a_verified_0600_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("node-1.pcapng", 0, b"hello "))
            .expect("first chunk");
        assert_eq!(names_in(dir.path()), vec!["node-1.pcapng.part"]);
        artifacts
            .accept("node-1", &chunk("node-1.pcapng", 6, b"world"))
            .expect("second chunk");
        let path = artifacts
            .finish("node-1", &info("node-1.pcapng", b"hello world"))
            .expect("verified");
        assert_eq!(path, dir.path().join("node-1.pcapng"));
        assert_eq!(fs::read(&path).expect("read"), b"hello world");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(names_in(dir.path()), vec!["node-1.pcapng"]);
    }

    #[test]
    fn a_gap_in_offsets_fails_the_artifact_and_removes_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("first chunk");
        let err = artifacts
            .accept("node-1", &chunk("n.pcapng", 4, b"e"))
            .expect_err("gap");
        assert_eq!(
            err,
            ArtifactError::Gap {
                name: "n.pcapng".into(),
                expected: 3,
                got: 4
            }
        );
        assert!(names_in(dir.path()).is_empty());
        // Later chunks are ignored and the result reports the first error.
        artifacts
            .accept("node-1", &chunk("n.pcapng", 3, b"d"))
            .expect("ignored");
        assert!(names_in(dir.path()).is_empty());
        let finish = artifacts.finish("node-1", &info("n.pcapng", b"abcde"));
        assert_eq!(finish, Err(err));
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn a_corrupt_chunk_fails_the_artifact_and_removes_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("first chunk");
        let mut bad = chunk("n.pcapng", 3, b"def");
        bad.data[1] ^= 0xff;
        let err = artifacts.accept("node-1", &bad).expect_err("corrupt");
        assert_eq!(
            err,
            ArtifactError::ChunkDigest {
                name: "n.pcapng".into(),
                offset: 3
            }
        );
        assert!(err.to_string().contains("SHA-256"), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn a_size_mismatch_removes_the_part_and_saves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("chunk");
        let err = artifacts
            .finish("node-1", &info("n.pcapng", b"abcd"))
            .expect_err("short");
        assert_eq!(
            err,
            ArtifactError::Size {
                name: "n.pcapng".into(),
                expected: 4,
                got: 3
            }
        );
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn a_whole_file_digest_mismatch_removes_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("chunk");
        let err = artifacts
            .finish("node-1", &info("n.pcapng", b"xyz"))
            .expect_err("digest");
        assert!(matches!(err, ArtifactError::Digest { .. }), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn unfinished_and_unannounced_artifacts_leave_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("chunk");
        artifacts.abandon_unfinished();
        assert!(names_in(dir.path()).is_empty());
        let err = artifacts
            .finish("node-2", &info("other.pcapng", b"abc"))
            .expect_err("never sent");
        assert!(matches!(err, ArtifactError::Missing { .. }), "{err}");
    }

    #[test_case("../etc/passwd" ; "parent path")]
    #[test_case("a/b.pcapng" ; "separator")]
    #[test_case(".hidden" ; "hidden")]
    #[test_case("" ; "empty")]
    #[test_case("merged.pcapng" ; "reserved")]
    #[test_case("x.part" ; "part suffix")]
    fn artifact_names_stay_inside_the_run_directory(name: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        let err = artifacts
            .accept("node-1", &chunk(name, 0, b"abc"))
            .expect_err("bad name");
        assert!(matches!(err, ArtifactError::BadName { .. }), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn a_second_sender_fails_the_artifact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut artifacts = Artifacts::new(dir.path().to_path_buf());
        artifacts
            .accept("node-1", &chunk("n.pcapng", 0, b"abc"))
            .expect("chunk");
        let err = artifacts
            .accept("node-2", &chunk("n.pcapng", 3, b"def"))
            .expect_err("two senders");
        assert!(matches!(err, ArtifactError::TwoSenders { .. }), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    // ------------------------------------------------------------- --on

    #[test_case("node-1" => "node-1" ; "probe only")]
    #[test_case("node-1:eth0" => "node-1:eth0" ; "with interface")]
    #[test_case("node-2:flannel.1" => "node-2:flannel.1" ; "dotted interface")]
    #[test_case(" cloudvm-1:eth0 " => "cloudvm-1:eth0" ; "trimmed")]
    #[test_case("node-1@pod:default/web-0" => "node-1@pod:default/web-0" ; "pod")]
    #[test_case("node-1@pod:default/web-0:eth0" => "node-1@pod:default/web-0:eth0" ; "pod interface")]
    fn capture_points_parse(s: &str) -> String {
        parse_capture_point(s).expect("valid").to_string()
    }

    #[test_case("" ; "empty")]
    #[test_case(":eth0" ; "no probe")]
    #[test_case("node-1:" ; "empty interface")]
    #[test_case("node-1:eth0:1" ; "two colons")]
    #[test_case("node-1:averyveryverylongname" ; "interface too long")]
    #[test_case("node-1@default/web-0" ; "not a pod form")]
    #[test_case("node-1@pod:web-0" ; "no namespace")]
    #[test_case("node-1@pod:/web-0" ; "empty namespace")]
    #[test_case("node 1:eth0" ; "whitespace")]
    fn bad_capture_points_are_refused(s: &str) {
        assert!(parse_capture_point(s).is_err(), "{s:?} accepted");
    }

    #[test]
    fn on_takes_comma_lists_and_repeats_and_duration_is_bounded() {
        use clap::{Args, FromArgMatches};
        let command = CaptureArgs::augment_args(clap::Command::new("capture"));
        let matches = command
            .clone()
            .try_get_matches_from([
                "capture",
                "--on",
                "cloudvm-1:eth0,node-1:eth0",
                "--on",
                "node-2:flannel.1",
                "--filter",
                "tcp port 30080",
                "--duration",
                "5s",
            ])
            .expect("parses");
        let args = CaptureArgs::from_arg_matches(&matches).expect("args");
        let Some(pb::run_request::Kind::Capture(request)) = args.request().kind else {
            panic!("not a capture request");
        };
        assert_eq!(
            request.on,
            vec!["cloudvm-1:eth0", "node-1:eth0", "node-2:flannel.1"]
        );
        assert_eq!(request.duration_us, 5_000_000);
        assert_eq!(request.snaplen, DEFAULT_SNAPLEN);
        assert!(!request.payload);

        for bad in ["0s", "11m"] {
            let refused =
                command
                    .clone()
                    .try_get_matches_from(["capture", "--on", "n", "--duration", bad]);
            assert!(refused.is_err(), "--duration {bad} accepted");
        }
        let payload = command
            .clone()
            .try_get_matches_from(["capture", "--on", "n", "--duration", "1s", "--payload"])
            .expect("parses");
        let args = CaptureArgs::from_arg_matches(&payload).expect("args");
        let Some(pb::run_request::Kind::Capture(request)) = args.request().kind else {
            panic!("not a capture request");
        };
        assert_eq!(request.snaplen, PAYLOAD_SNAPLEN);
    }

    #[test]
    fn help_teaches_headers_only_and_shows_an_example() {
        use clap::Args;
        let help = CaptureArgs::augment_args(clap::Command::new("capture"))
            .render_long_help()
            .to_string();
        assert!(help.contains("headers-only by default"), "{help}");
        assert!(
            help.contains("--on cloudvm-1:eth0,node-1:eth0,node-2:flannel.1"),
            "{help}"
        );
    }

    // --------------------------------------------------------- progress

    #[test]
    fn progress_lines_name_observers_and_wait_half_a_second() {
        let start = Instant::now();
        let mut board = ProgressBoard::default();
        let armed = Event::CaptureArmed(pb::CaptureArmed {
            interfaces: vec![pb::ArmedInterface {
                interface: "node-1/eth0".into(),
                armed_unix_ns: 1,
            }],
        });
        assert_eq!(
            board.update("node-1", &armed, start).as_deref(),
            Some("node-1: armed eth0")
        );
        let progress = |packets| {
            Event::CaptureProgress(pb::CaptureProgress {
                packets,
                bytes: 0,
                drops: 2,
            })
        };
        assert_eq!(
            board.update("node-1", &progress(1234), start).as_deref(),
            Some("node-1/eth0 1234 pkts 2 drops")
        );
        let soon = start + Duration::from_millis(100);
        assert_eq!(board.update("node-2", &progress(7), soon), None);
        let later = start + Duration::from_millis(600);
        assert_eq!(
            board.update("node-1", &progress(1300), later).as_deref(),
            Some("node-1/eth0 1300 pkts 2 drops · node-2 7 pkts 2 drops")
        );
    }

    // ----------------------------------------------------------- report

    fn observer(probe: &str, outcome: pb::task_result::Outcome) -> pb::ObserverResult {
        pb::ObserverResult {
            probe: probe.into(),
            interfaces: vec!["eth0".into()],
            result: Some(pb::TaskResult {
                task_id: "t".into(),
                outcome: Some(outcome),
            }),
            clock_offset_ns: 1_500,
            clock_error_ns: 40_000,
        }
    }

    fn captured(probe: &str, content: &[u8]) -> pb::task_result::Outcome {
        pb::task_result::Outcome::Capture(pb::CaptureResult {
            stop: pb::CaptureStop::Duration.into(),
            interfaces: vec![pb::CaptureInterfaceStats {
                interface: format!("{probe}/eth0"),
                armed_unix_ns: 10_000,
                packets_written: 12,
                kernel_drops: 1,
                ..Default::default()
            }],
            artifact: Some(info(&format!("{probe}.pcapng"), content)),
            ..Default::default()
        })
    }

    fn failed(kind: pb::task_error::Kind, message: &str) -> pb::task_result::Outcome {
        pb::task_result::Outcome::Error(pb::TaskError {
            kind: kind.into(),
            message: message.into(),
        })
    }

    fn report_for(observers: Vec<pb::ObserverResult>, dir: &Path) -> CaptureReport {
        let mut artifacts = Artifacts::new(dir.to_path_buf());
        artifacts
            .accept("node-1", &chunk("node-1.pcapng", 0, b"pcap"))
            .expect("chunk");
        let record = pb::RunRecord {
            run_id: "run-1".into(),
            trace_id: "trace-1".into(),
            observers,
            timing: Some(pb::RunTiming {
                clock_error_us: 40,
                capture_skew_us: 12,
                duration_ms: 5_100,
            }),
            ..Default::default()
        };
        CaptureReport::new(&pb::RunAccepted::default(), &record, "icmp", &mut artifacts)
    }

    #[test]
    fn every_observer_captured_exits_zero_and_reports_the_contract_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(
            vec![observer("node-1", captured("node-1", b"pcap"))],
            dir.path(),
        );
        assert_eq!(report.exit_code(), exit::OK);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["run_id"], "run-1");
        assert_eq!(json["timing"]["clock_error_us"], 40);
        assert_eq!(json["timing"]["capture_skew_us"], 12);
        assert_eq!(json["observers"][0]["stop"], "duration");
        assert_eq!(json["observers"][0]["clock_offset_us"], 1.5);
        assert_eq!(json["observers"][0]["interfaces"][0]["name"], "eth0");
        assert_eq!(json["observers"][0]["interfaces"][0]["kernel_drops"], 1);
        // The offset (1.5 us) is inside its error bound (40 us): the clocks
        // agree within what can be measured, so the instant is not moved.
        assert_eq!(
            json["observers"][0]["interfaces"][0]["armed_unix_ns"],
            10_000
        );
        let lines = report.table_lines();
        assert!(
            lines.contains(
                &"timing: clock error ±40 us, capture skew 12 us, duration 5100 ms".to_owned()
            ),
            "{lines:?}"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("run run-1 · trace trace-1")
        );
    }

    #[test]
    fn a_failed_observer_exits_one_and_bad_input_exits_two() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(
            vec![
                observer("node-1", captured("node-1", b"pcap")),
                observer(
                    "node-2",
                    failed(pb::task_error::Kind::ProbeFailure, "no CAP_NET_RAW"),
                ),
            ],
            dir.path(),
        );
        assert_eq!(report.exit_code(), exit::FAULT);
        assert!(
            report
                .table_lines()
                .contains(&"node-2: no CAP_NET_RAW".to_owned())
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(
            vec![observer(
                "node-1",
                failed(pb::task_error::Kind::InvalidInput, "no interface eth9"),
            )],
            dir.path(),
        );
        assert_eq!(report.exit_code(), exit::USAGE);
        // The chunks of a node that then failed leave nothing behind.
        assert!(names_in(dir.path()).is_empty());

        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(Vec::new(), dir.path());
        assert_eq!(report.exit_code(), exit::INCONCLUSIVE);
    }

    #[test]
    fn a_corrupt_artifact_fails_its_observer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = report_for(
            vec![observer("node-1", captured("node-1", b"pca?"))],
            dir.path(),
        );
        assert_eq!(report.exit_code(), exit::FAULT);
        assert!(report.observers[0].artifact.is_none());
        assert!(names_in(dir.path()).is_empty());
    }
}
