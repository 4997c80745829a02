//! Wire conversions of the capture task: `pb::CaptureTask` becomes a
//! [`CaptureTaskSpec`] with typed errors naming the field and its range, and
//! the engine's events and outcome become `pb` messages.
//!
//! The conversion reads no clock: whether `arm_at_unix_ns` lies too far
//! ahead is decided by the engine against the probe's clock when the task
//! runs ([`crate::capture::SpecError::ArmTooFar`], also invalid input).

use std::collections::HashSet;
use std::time::Duration;

use probemesh_packet::bpf::{self, BpfInsn, CompiledFilter, FilterError};
use probemesh_proto::pb;

use crate::capture::spec::{
    HEADERS_ONLY_SNAPLEN, MAX_BYTES, MAX_DURATION, MAX_INTERFACES, MAX_PACKETS, MAX_SNAPLEN,
    MIN_SNAPLEN,
};
use crate::capture::{
    Arming, CaptureEvent, CaptureLimits, CaptureOutcome, CaptureProgress, CaptureSpec, StopReason,
};
use crate::platform::Timestamp;
use crate::tasks::capture::{ArtifactChunk, CaptureTaskEvent, CaptureTaskSpec, StreamedArtifact};

/// Progress interval when the wire says 0.
pub const DEFAULT_PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Shortest progress interval; shorter ones are raised to it.
pub const MIN_PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Longest progress interval; longer ones are lowered to it.
pub const MAX_PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Why a `pb::CaptureTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCaptureTask {
    /// No interface named.
    #[error("capture.interfaces: empty; name 1..={MAX_INTERFACES} interfaces")]
    NoInterfaces,
    /// More than [`MAX_INTERFACES`].
    #[error("capture.interfaces: {0} interfaces; at most {MAX_INTERFACES}")]
    TooManyInterfaces(usize),
    /// Not a name the kernel accepts for an interface.
    #[error(
        "capture.interfaces: {0:?} is not an interface name (1..=15 bytes, no '/', NUL or whitespace)"
    )]
    InterfaceName(String),
    /// The same interface twice.
    #[error("capture.interfaces: {0} is named twice")]
    DuplicateInterface(String),
    /// The Ethernet program is missing, too long or malformed.
    #[error("capture.filter_ethernet: {0}")]
    FilterEthernet(FilterError),
    /// The raw-IP program is too long or malformed.
    #[error("capture.filter_raw_ip: {0}")]
    FilterRawIp(FilterError),
    /// Snap length out of range.
    #[error("capture.snaplen: {0} bytes is out of range {MIN_SNAPLEN}..={MAX_SNAPLEN} (0 = 128)")]
    Snaplen(u32),
    /// A snap length that keeps payloads, without the right to them.
    #[error(
        "capture.snaplen: {0} bytes would capture payloads and payload_allowed is not set (headers only: at most {HEADERS_ONLY_SNAPLEN} bytes)"
    )]
    PayloadNotAllowed(u32),
    /// Duration missing or above [`MAX_DURATION`].
    #[error("capture.duration_us: {0} µs is out of range 1..=600000000 (10 min); it is required")]
    Duration(u64),
    /// Packet limit above [`MAX_PACKETS`].
    #[error("capture.max_packets: {0} is out of range 1..={MAX_PACKETS} (0 = {MAX_PACKETS})")]
    MaxPackets(u64),
    /// Byte limit above [`MAX_BYTES`].
    #[error("capture.max_bytes: {0} is out of range 1..={MAX_BYTES} (0 = 2 GiB)")]
    MaxBytes(u64),
    /// An arming instant before the Unix epoch.
    #[error("capture.arm_at_unix_ns: {0} is negative (0 = arm at once)")]
    ArmAt(i64),
}

impl TryFrom<pb::CaptureTask> for CaptureTaskSpec {
    type Error = InvalidCaptureTask;

    fn try_from(task: pb::CaptureTask) -> Result<Self, InvalidCaptureTask> {
        check_interfaces(&task.interfaces)?;
        let ethernet = program(&task.filter_ethernet);
        bpf::validate(&task.filter_expr, &ethernet).map_err(InvalidCaptureTask::FilterEthernet)?;
        let raw_ip = program(&task.filter_raw_ip);
        if !raw_ip.is_empty() {
            bpf::validate(&task.filter_expr, &raw_ip).map_err(InvalidCaptureTask::FilterRawIp)?;
        }
        let snaplen = match task.snaplen {
            0 => HEADERS_ONLY_SNAPLEN,
            n if (MIN_SNAPLEN..=MAX_SNAPLEN).contains(&n) => n,
            n => return Err(InvalidCaptureTask::Snaplen(n)),
        };
        if snaplen > HEADERS_ONLY_SNAPLEN && !task.payload_allowed {
            return Err(InvalidCaptureTask::PayloadNotAllowed(snaplen));
        }
        let duration = Duration::from_micros(task.duration_us);
        if duration.is_zero() || duration > MAX_DURATION {
            return Err(InvalidCaptureTask::Duration(task.duration_us));
        }
        let max_packets = match task.max_packets {
            0 => MAX_PACKETS,
            n if n <= MAX_PACKETS => n,
            n => return Err(InvalidCaptureTask::MaxPackets(n)),
        };
        let max_bytes = match task.max_bytes {
            0 => MAX_BYTES,
            n if n <= MAX_BYTES => n,
            n => return Err(InvalidCaptureTask::MaxBytes(n)),
        };
        // Told later, the instant in the task is not used.
        let arming = match task.arm_at_unix_ns {
            _ if task.arm_when_told => Arming::WhenTold,
            0 => Arming::Now,
            ns if ns < 0 => return Err(InvalidCaptureTask::ArmAt(ns)),
            ns => Arming::At(Timestamp::from_nanos(ns)),
        };
        let progress_every = match task.progress_interval_ms {
            0 => DEFAULT_PROGRESS_EVERY,
            ms => {
                Duration::from_millis(u64::from(ms)).clamp(MIN_PROGRESS_EVERY, MAX_PROGRESS_EVERY)
            }
        };
        Ok(CaptureTaskSpec {
            capture: CaptureSpec {
                interfaces: task.interfaces,
                filter: CompiledFilter {
                    expr: task.filter_expr,
                    ethernet,
                    raw_ip,
                },
                snaplen,
                payload_allowed: task.payload_allowed,
                limits: CaptureLimits {
                    duration,
                    max_packets,
                    max_bytes,
                },
            },
            arming,
            task_id: String::new(),
            run: String::new(),
            clock_note: task.clock_note,
            progress_every,
        })
    }
}

/// The interface list: 1..=[`MAX_INTERFACES`] distinct names the kernel
/// could have (`IFNAMSIZ` is 16 with the NUL).
fn check_interfaces(names: &[String]) -> Result<(), InvalidCaptureTask> {
    if names.is_empty() {
        return Err(InvalidCaptureTask::NoInterfaces);
    }
    if names.len() > MAX_INTERFACES {
        return Err(InvalidCaptureTask::TooManyInterfaces(names.len()));
    }
    let mut seen = HashSet::new();
    for name in names {
        let valid = !name.is_empty()
            && name.len() < 16
            && !name.contains(['/', '\0'])
            && !name.chars().any(char::is_whitespace);
        if !valid {
            return Err(InvalidCaptureTask::InterfaceName(name.clone()));
        }
        if !seen.insert(name.as_str()) {
            return Err(InvalidCaptureTask::DuplicateInterface(name.clone()));
        }
    }
    Ok(())
}

/// Unpacks a program sent as `repeated fixed64`.
fn program(words: &[u64]) -> Vec<BpfInsn> {
    words.iter().map(|&w| BpfInsn::from_wire(w)).collect()
}

fn armed(
    interfaces: &[crate::capture::ArmedInterface],
    ready_in: Duration,
    ready_margin_ns: Option<i64>,
) -> pb::CaptureArmed {
    pb::CaptureArmed {
        ring_open_us: micros(ready_in),
        ready_margin_us: ready_margin_ns.map(|ns| ns / 1_000),
        interfaces: interfaces
            .iter()
            .map(|i| pb::ArmedInterface {
                interface: i.interface.clone(),
                armed_unix_ns: i.armed_at.as_nanos(),
            })
            .collect(),
    }
}

/// A set-up time in whole microseconds, at least 1 (0 means "not
/// measured" on the wire).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl From<CaptureProgress> for pb::CaptureProgress {
    fn from(p: CaptureProgress) -> Self {
        pb::CaptureProgress {
            packets: p.packets,
            bytes: p.bytes,
            drops: p.drops,
        }
    }
}

/// The wire result of a finished capture of `spec` whose file was streamed
/// as `artifact`.
pub fn capture_result(
    spec: &CaptureTaskSpec,
    outcome: &CaptureOutcome,
    artifact: &StreamedArtifact,
) -> pb::CaptureResult {
    let (stop, stop_limit) = match outcome.stop {
        StopReason::Duration => (pb::CaptureStop::Duration, 0),
        StopReason::PacketLimit(n) => (pb::CaptureStop::PacketLimit, n),
        StopReason::ByteLimit(n) => (pb::CaptureStop::ByteLimit, n),
        StopReason::Stopped => (pb::CaptureStop::Stopped, 0),
    };
    pb::CaptureResult {
        stop: stop.into(),
        stop_limit,
        interfaces: outcome
            .interfaces
            .iter()
            .map(|i| pb::CaptureInterfaceStats {
                interface: i.interface.clone(),
                armed_unix_ns: i.armed_at.as_nanos(),
                packets_written: i.packets,
                kernel_received: i.kernel.received,
                kernel_drops: i.kernel.drops,
                kernel_freezes: i.kernel.freezes,
            })
            .collect(),
        ended_unix_ns: outcome.ended_at.as_nanos(),
        artifact: Some(pb::ArtifactInfo {
            name: artifact.name.clone(),
            size_bytes: artifact.size,
            sha256: artifact.sha256.to_vec(),
        }),
        snaplen: spec.capture.snaplen,
    }
}

impl From<CaptureTaskEvent> for pb::task_progress::Event {
    fn from(event: CaptureTaskEvent) -> Self {
        match event {
            CaptureTaskEvent::Capture(CaptureEvent::Ready { ready_in }) => {
                pb::task_progress::Event::CaptureReady(pb::CaptureReady {
                    ready_in_us: micros(ready_in),
                })
            }
            CaptureTaskEvent::Capture(CaptureEvent::Armed {
                interfaces,
                ready_in,
                ready_margin_ns,
            }) => pb::task_progress::Event::CaptureArmed(armed(
                &interfaces,
                ready_in,
                ready_margin_ns,
            )),
            CaptureTaskEvent::Capture(CaptureEvent::Progress(p)) => {
                pb::task_progress::Event::CaptureProgress(p.into())
            }
            CaptureTaskEvent::Chunk(chunk) => pb::task_progress::Event::ArtifactChunk(chunk.into()),
        }
    }
}

impl From<ArtifactChunk> for pb::ArtifactChunk {
    fn from(chunk: ArtifactChunk) -> Self {
        pb::ArtifactChunk {
            name: chunk.name,
            offset: chunk.offset,
            data: chunk.data,
            sha256: chunk.sha256.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    /// `ret #128`: accept every packet, headers only.
    const ACCEPT: u64 = (0x06 << 48) | 128;

    fn task() -> pb::CaptureTask {
        pb::CaptureTask {
            interfaces: vec!["eth0".into(), "flannel.1".into()],
            filter_expr: "icmp".into(),
            filter_ethernet: vec![ACCEPT],
            duration_us: 5_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_the_zeros() {
        let spec = CaptureTaskSpec::try_from(task()).unwrap();
        let capture = &spec.capture;
        assert_eq!(capture.snaplen, HEADERS_ONLY_SNAPLEN);
        assert!(!capture.payload_allowed);
        assert_eq!(capture.limits.duration, Duration::from_secs(5));
        assert_eq!(capture.limits.max_packets, MAX_PACKETS);
        assert_eq!(capture.limits.max_bytes, MAX_BYTES);
        assert_eq!(capture.filter.ethernet, vec![BpfInsn::from_wire(ACCEPT)]);
        assert!(capture.filter.raw_ip.is_empty());
        assert_eq!(capture.filter.expr, "icmp");
        assert_eq!(spec.arming, Arming::Now);
        assert_eq!(spec.progress_every, DEFAULT_PROGRESS_EVERY);
        assert_eq!(
            capture.validate(),
            Ok(()),
            "the engine accepts what we accept"
        );
    }

    #[test]
    fn explicit_values_are_kept_or_clamped() {
        let spec = CaptureTaskSpec::try_from(pb::CaptureTask {
            snaplen: 262_144,
            payload_allowed: true,
            max_packets: 10,
            max_bytes: 4096,
            duration_us: 600_000_000,
            arm_at_unix_ns: 1_700_000_000_000_000_000,
            progress_interval_ms: 1,
            clock_note: "offset +12 us".into(),
            filter_raw_ip: vec![ACCEPT],
            ..task()
        })
        .unwrap();
        assert_eq!(spec.capture.snaplen, 262_144);
        assert_eq!(
            (
                spec.capture.limits.max_packets,
                spec.capture.limits.max_bytes
            ),
            (10, 4096)
        );
        assert_eq!(spec.capture.limits.duration, MAX_DURATION);
        assert_eq!(
            spec.arming,
            Arming::At(Timestamp::from_nanos(1_700_000_000_000_000_000))
        );
        let told = CaptureTaskSpec::try_from(pb::CaptureTask {
            arm_at_unix_ns: 1_700_000_000_000_000_000,
            arm_when_told: true,
            ..task()
        })
        .unwrap();
        assert_eq!(told.arming, Arming::WhenTold);
        assert_eq!(spec.progress_every, MIN_PROGRESS_EVERY);
        assert_eq!(spec.clock_note, "offset +12 us");
        assert_eq!(spec.capture.filter.raw_ip.len(), 1);
        assert_eq!(spec.capture.validate(), Ok(()));
    }

    #[test]
    fn a_compiled_filter_survives_the_wire() {
        let filter = bpf::compile_filter("icmp or udp port 8472", 128).unwrap();
        let pack = |p: &[BpfInsn]| p.iter().map(|i| i.to_wire()).collect::<Vec<_>>();
        let spec = CaptureTaskSpec::try_from(pb::CaptureTask {
            filter_expr: filter.expr.clone(),
            filter_ethernet: pack(&filter.ethernet),
            filter_raw_ip: pack(&filter.raw_ip),
            ..task()
        })
        .unwrap();
        assert_eq!(spec.capture.filter, filter);
    }

    #[test_case(|t| t.interfaces.clear(), "capture.interfaces: empty; name 1..=16 interfaces" ; "no interface")]
    #[test_case(|t| t.interfaces = (0..17).map(|i| format!("e{i}")).collect(), "capture.interfaces: 17 interfaces; at most 16" ; "too many interfaces")]
    #[test_case(|t| t.interfaces[1] = "a/b".into(), "capture.interfaces: \"a/b\" is not an interface name (1..=15 bytes, no '/', NUL or whitespace)" ; "slash")]
    #[test_case(|t| t.interfaces[1] = "x".repeat(16), "capture.interfaces: \"xxxxxxxxxxxxxxxx\" is not an interface name (1..=15 bytes, no '/', NUL or whitespace)" ; "long name")]
    #[test_case(|t| t.interfaces[1] = String::new(), "capture.interfaces: \"\" is not an interface name (1..=15 bytes, no '/', NUL or whitespace)" ; "empty name")]
    #[test_case(|t| t.interfaces[1] = "eth0".into(), "capture.interfaces: eth0 is named twice" ; "duplicate")]
    #[test_case(|t| t.filter_ethernet.clear(), "capture.filter_ethernet: filter 'icmp' is not a usable BPF program: no instructions" ; "no program")]
    #[test_case(|t| t.filter_ethernet = vec![ACCEPT; 4097], "capture.filter_ethernet: filter 'icmp' is not a usable BPF program: 4097 instructions, more than the kernel's limit of 4096" ; "oversized program")]
    #[test_case(|t| t.filter_ethernet = vec![(0x15 << 48) | (5 << 40) | 1, ACCEPT], "capture.filter_ethernet: filter 'icmp' is not a usable BPF program: instruction 0 jumps past the end" ; "jump out")]
    #[test_case(|t| t.filter_raw_ip = vec![(0x28 << 48) | 12], "capture.filter_raw_ip: filter 'icmp' is not a usable BPF program: the last instruction does not return" ; "raw ip without ret")]
    #[test_case(|t| t.snaplen = 63, "capture.snaplen: 63 bytes is out of range 64..=262144 (0 = 128)" ; "snaplen small")]
    #[test_case(|t| t.snaplen = 262_145, "capture.snaplen: 262145 bytes is out of range 64..=262144 (0 = 128)" ; "snaplen large")]
    #[test_case(|t| t.snaplen = 129, "capture.snaplen: 129 bytes would capture payloads and payload_allowed is not set (headers only: at most 128 bytes)" ; "payload refused")]
    #[test_case(|t| t.duration_us = 0, "capture.duration_us: 0 µs is out of range 1..=600000000 (10 min); it is required" ; "no duration")]
    #[test_case(|t| t.duration_us = 600_000_001, "capture.duration_us: 600000001 µs is out of range 1..=600000000 (10 min); it is required" ; "long duration")]
    #[test_case(|t| t.max_packets = 10_000_001, "capture.max_packets: 10000001 is out of range 1..=10000000 (0 = 10000000)" ; "packets")]
    #[test_case(|t| t.max_bytes = (2 << 30) + 1, "capture.max_bytes: 2147483649 is out of range 1..=2147483648 (0 = 2 GiB)" ; "bytes")]
    #[test_case(|t| t.arm_at_unix_ns = -1, "capture.arm_at_unix_ns: -1 is negative (0 = arm at once)" ; "arm before epoch")]
    fn invalid_capture_tasks_name_the_field_and_range(
        change: fn(&mut pb::CaptureTask),
        message: &str,
    ) {
        let mut wire = task();
        change(&mut wire);
        let err = CaptureTaskSpec::try_from(wire).unwrap_err();
        assert_eq!(err.to_string(), message);
        let error = pb::TaskError::from(&super::super::InvalidTask::from(err));
        assert_eq!(error.kind(), pb::task_error::Kind::InvalidInput);
    }

    #[test]
    fn capture_errors_map_to_kinds() {
        use crate::capture::CaptureError;
        use crate::tasks::Error;
        use pb::task_error::Kind;
        let kind = |e: CaptureError| pb::TaskError::from(&Error::from(e)).kind();
        let unknown = CaptureError::UnknownInterface {
            interface: "eth9".into(),
            available: vec!["lo".into(), "eth0".into()],
        };
        let message = pb::TaskError::from(&Error::from(unknown)).message;
        assert_eq!(
            message,
            "no interface 'eth9' in this network namespace (it has: lo, eth0)"
        );
        assert_eq!(
            kind(crate::capture::SpecError::ArmTooFar(Duration::from_secs(61)).into()),
            Kind::InvalidInput
        );
        assert_eq!(
            kind(CaptureError::Cancelled { packets: 3 }),
            Kind::Cancelled
        );
        let open = CaptureError::Open {
            interface: "eth0".into(),
            op: "opening the ring",
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(kind(open), Kind::ProbeFailure);
        assert_eq!(kind(CaptureError::Lost), Kind::ProbeFailure);
    }

    #[test]
    fn a_capture_task_becomes_a_task_spec_with_its_run() {
        let task = pb::Task {
            task_id: "t".into(),
            run_id: "run-7".into(),
            kind: Some(pb::task::Kind::Capture(task())),
            ..Default::default()
        };
        let Ok(crate::tasks::spec::TaskSpec::Capture(spec)) =
            crate::tasks::spec::TaskSpec::try_from(task)
        else {
            panic!("not a capture spec");
        };
        assert_eq!((spec.task_id.as_str(), spec.run.as_str()), ("t", "run-7"));
    }
}
