//! Wire conversions of the transfer family: TCP transfer, UDP echo, the
//! responder, and the network namespace a task runs in (`Task.netns`).

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use probemesh_proto::pb;

use super::{MIN_DURATION, task_error};
use super::{duration_us, is_hostname, nanos, parse_ip, probe_count, saturating_u32};
use crate::platform::netns::{NetnsError, NetnsTarget};
use crate::tasks::responder::{
    DEFAULT_LIFETIME, MAX_LIFETIME, ResponderReady, ResponderSpec, ResponderSummary,
};
use crate::tasks::transfer::{TcpTransferSpec, TransferBytes, TransferReport};
use crate::tasks::udp_echo::{EchoEvent, EchoEventKind, UdpEchoSpec, UdpEchoSummary};
use crate::types::PayloadSize;

/// Whole-transfer deadline when the wire says 0.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest namespace path accepted, bytes (`PATH_MAX`).
const MAX_PATH_LEN: usize = 4096;

/// Why a `pb::TcpTransferTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTcpTransferTask {
    /// Empty, too long, or with characters no hostname has.
    #[error(
        "tcp_transfer.host: {0:?} is not an IP address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')"
    )]
    Host(String),
    /// Port 0 or above 65535.
    #[error("tcp_transfer.port: {0} is out of range 1..=65535")]
    Port(u32),
    /// More than 16 MiB.
    #[error("tcp_transfer.bytes: {0} is out of range 1..=16777216 (0 = 65536)")]
    Bytes(u64),
}

/// Why a `pb::UdpEchoTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUdpEchoTask {
    /// Not an IPv4 address or hostname (the responder listens on IPv4).
    #[error(
        "udp_echo.host: {0:?} is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')"
    )]
    Host(String),
    /// Port 0 or above 65535.
    #[error("udp_echo.port: {0} is out of range 1..=65535")]
    Port(u32),
    /// Payload larger than an IPv4 datagram can carry.
    #[error("udp_echo.size: {0} bytes is out of range 0..=65507")]
    Size(u32),
    /// Count 0 or too many datagrams.
    #[error("udp_echo.count: {0} is out of range 1..=10000")]
    Count(u32),
}

/// Why a `pb::ResponderTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResponderTask {
    /// Longer than [`MAX_LIFETIME`].
    #[error("responder.lifetime: {0} µs is out of range 1 ms..=300 s (0 = 30 s)")]
    Lifetime(u64),
}

/// Why a `pb::NetnsRef` does not name a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNetns {
    /// Neither a path nor a PID.
    #[error("task.netns: neither a path nor a pid")]
    Empty,
    /// Not an absolute, normal path (no `..`, no NUL, at most 4096 bytes).
    #[error("task.netns.path: {0:?} is not an absolute path to a namespace file")]
    Path(String),
    /// PID 0.
    #[error("task.netns.pid: 0 is not a process")]
    Pid,
    /// No network namespace on this host holds the pod's address.
    #[error("no network namespace on this host holds {0} (is the pod running here?)")]
    PodIp(String),
}

impl TryFrom<pb::TcpTransferTask> for TcpTransferSpec {
    type Error = InvalidTcpTransferTask;

    fn try_from(task: pb::TcpTransferTask) -> Result<Self, InvalidTcpTransferTask> {
        if parse_ip(&task.host).is_none() && !is_hostname(&task.host) {
            return Err(InvalidTcpTransferTask::Host(task.host));
        }
        let port = port(task.port).ok_or(InvalidTcpTransferTask::Port(task.port))?;
        let bytes = match task.bytes {
            0 => TransferBytes::DEFAULT,
            n => TransferBytes::new(n).ok_or(InvalidTcpTransferTask::Bytes(n))?,
        };
        Ok(TcpTransferSpec {
            host: task.host,
            port,
            bytes,
            timeout: duration_us(task.timeout_us, DEFAULT_TRANSFER_TIMEOUT),
            responder: task.responder,
        })
    }
}

impl TryFrom<pb::UdpEchoTask> for UdpEchoSpec {
    type Error = InvalidUdpEchoTask;

    fn try_from(task: pb::UdpEchoTask) -> Result<Self, InvalidUdpEchoTask> {
        match parse_ip(&task.host) {
            Some(IpAddr::V4(_)) => {}
            None if is_hostname(&task.host) => {}
            Some(IpAddr::V6(_)) | None => return Err(InvalidUdpEchoTask::Host(task.host)),
        }
        let port = port(task.port).ok_or(InvalidUdpEchoTask::Port(task.port))?;
        let size = u16::try_from(task.size)
            .ok()
            .and_then(PayloadSize::new)
            .ok_or(InvalidUdpEchoTask::Size(task.size))?;
        let count = probe_count(task.count).ok_or(InvalidUdpEchoTask::Count(task.count))?;
        Ok(UdpEchoSpec {
            host: task.host,
            port,
            size,
            dont_fragment: task.dont_fragment,
            count,
            interval: duration_us(task.interval_us, super::DEFAULT_INTERVAL),
            timeout: duration_us(task.timeout_us, super::DEFAULT_TIMEOUT),
        })
    }
}

impl TryFrom<pb::ResponderTask> for ResponderSpec {
    type Error = InvalidResponderTask;

    fn try_from(task: pb::ResponderTask) -> Result<Self, InvalidResponderTask> {
        let lifetime = match task.lifetime_us {
            0 => DEFAULT_LIFETIME,
            us => Some(Duration::from_micros(us))
                .filter(|d| (MIN_DURATION..=MAX_LIFETIME).contains(d))
                .ok_or(InvalidResponderTask::Lifetime(us))?,
        };
        Ok(ResponderSpec { lifetime })
    }
}

/// The namespace a task names, and its label for messages.
pub fn netns_target(netns: pb::NetnsRef) -> Result<(NetnsTarget, String), InvalidNetns> {
    use pb::netns_ref::Target;
    let target = match netns.target {
        None => return Err(InvalidNetns::Empty),
        Some(Target::Pid(0)) => return Err(InvalidNetns::Pid),
        Some(Target::Pid(pid)) => NetnsTarget::Pid(pid),
        Some(Target::PodIp(ip)) => {
            let found = ip
                .parse()
                .ok()
                .and_then(crate::platform::netns::process_holding);
            NetnsTarget::Pid(found.ok_or(InvalidNetns::PodIp(ip))?)
        }
        Some(Target::Path(path)) => {
            let p = Path::new(&path);
            let normal = p.is_absolute()
                && path.len() <= MAX_PATH_LEN
                && !path.contains('\0')
                && p.components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !normal {
                return Err(InvalidNetns::Path(path));
            }
            NetnsTarget::Path(PathBuf::from(path))
        }
    };
    Ok((target, netns.label))
}

fn port(port: u32) -> Option<u16> {
    u16::try_from(port).ok().filter(|&p| p != 0)
}

impl From<&InvalidNetns> for pb::TaskError {
    fn from(invalid: &InvalidNetns) -> Self {
        task_error(pb::task_error::Kind::InvalidInput, invalid.to_string())
    }
}

impl From<&NetnsError> for pb::TaskError {
    fn from(error: &NetnsError) -> Self {
        let kind = if error.is_invalid_input() {
            pb::task_error::Kind::InvalidInput
        } else {
            pb::task_error::Kind::ProbeFailure
        };
        task_error(kind, error.to_string())
    }
}

/// The wire result of a finished transfer.
pub fn tcp_transfer_result(report: &TransferReport) -> pb::TcpTransferResult {
    let info = report.info.unwrap_or_default();
    pb::TcpTransferResult {
        address: report.address.ip().to_string(),
        port: u32::from(report.address.port()),
        connected: report.handshake.is_some(),
        handshake_ns: report.handshake.map_or(0, nanos),
        bytes_sent: report.bytes_sent,
        bytes_acked: report.bytes_acked,
        completed: report.completed,
        retransmits: info.total_retransmits,
        mss: info.snd_mss,
        pmtu: info.pmtu,
        rtt_us: info.rtt_us,
        elapsed_ns: nanos(report.elapsed),
        outcome: report.outcome.name().to_owned(),
        detail: report.detail(),
    }
}

impl From<&EchoEvent> for pb::UdpEchoReply {
    fn from(event: &EchoEvent) -> Self {
        let mut reply = pb::UdpEchoReply {
            seq: event.seq,
            ..Default::default()
        };
        let status = match &event.kind {
            EchoEventKind::Reply { rtt, bytes } => {
                reply.rtt_ns = nanos(*rtt);
                reply.bytes = saturating_u32(*bytes);
                "reply"
            }
            EchoEventKind::Timeout => "timeout",
            EchoEventKind::SendError { detail } => {
                reply.detail.clone_from(detail);
                "send_error"
            }
            EchoEventKind::IcmpError { detail } => {
                reply.detail.clone_from(detail);
                "icmp_error"
            }
        };
        status.clone_into(&mut reply.status);
        reply
    }
}

/// The wire summary of a finished UDP echo of `spec`.
pub fn udp_echo_summary(spec: &UdpEchoSpec, summary: &UdpEchoSummary) -> pb::UdpEchoSummary {
    pb::UdpEchoSummary {
        address: summary.address.ip().to_string(),
        port: u32::from(summary.address.port()),
        size: u32::from(spec.size.get()),
        transmitted: summary.transmitted,
        received: summary.received,
        errors: summary.errors,
        rtt: summary.rtt.map(Into::into),
    }
}

/// The wire summary of a responder.
pub fn responder_summary(summary: &ResponderSummary) -> pb::ResponderSummary {
    pb::ResponderSummary {
        tcp_connections: summary.tcp_connections,
        tcp_bytes: summary.tcp_bytes,
        udp_datagrams: summary.udp_datagrams,
    }
}

impl From<&ResponderReady> for pb::ResponderReady {
    fn from(ready: &ResponderReady) -> Self {
        pb::ResponderReady {
            tcp_port: u32::from(ready.tcp_port),
            udp_port: u32::from(ready.udp_port),
            address: ready.address.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn transfer(host: &str, port: u32, bytes: u64) -> pb::TcpTransferTask {
        pb::TcpTransferTask {
            host: host.into(),
            port,
            bytes,
            ..Default::default()
        }
    }

    #[test]
    fn transfer_defaults() {
        let spec = TcpTransferSpec::try_from(transfer("198.18.0.12", 30080, 0)).unwrap();
        assert_eq!(spec.bytes, TransferBytes::DEFAULT);
        assert_eq!(spec.timeout, DEFAULT_TRANSFER_TIMEOUT);
        assert!(!spec.responder);
        let spec = TcpTransferSpec::try_from(pb::TcpTransferTask {
            timeout_us: u64::MAX,
            ..transfer("web.lab", 1, 16 * 1024 * 1024)
        })
        .unwrap();
        assert_eq!(spec.timeout, super::super::MAX_DURATION);
    }

    #[test_case(transfer("", 80, 1), "tcp_transfer.host: \"\" is not an IP address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')" ; "empty host")]
    #[test_case(transfer("h", 0, 1), "tcp_transfer.port: 0 is out of range 1..=65535" ; "port 0")]
    #[test_case(transfer("h", 70000, 1), "tcp_transfer.port: 70000 is out of range 1..=65535" ; "port over")]
    #[test_case(transfer("h", 80, 16 * 1024 * 1024 + 1), "tcp_transfer.bytes: 16777217 is out of range 1..=16777216 (0 = 65536)" ; "bytes over")]
    fn invalid_transfers_name_the_field(task: pb::TcpTransferTask, message: &str) {
        assert_eq!(
            TcpTransferSpec::try_from(task).unwrap_err().to_string(),
            message
        );
    }

    fn echo(host: &str, size: u32, count: u32) -> pb::UdpEchoTask {
        pb::UdpEchoTask {
            host: host.into(),
            port: 9,
            size,
            count,
            ..Default::default()
        }
    }

    #[test_case(echo("::1", 10, 1), "udp_echo.host: \"::1\" is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')" ; "ipv6")]
    #[test_case(echo("h", 65508, 1), "udp_echo.size: 65508 bytes is out of range 0..=65507" ; "size over")]
    #[test_case(echo("h", 0, 0), "udp_echo.count: 0 is out of range 1..=10000" ; "count 0")]
    #[test_case(pb::UdpEchoTask { port: 0, ..echo("h", 0, 1) }, "udp_echo.port: 0 is out of range 1..=65535" ; "port 0")]
    fn invalid_echoes_name_the_field(task: pb::UdpEchoTask, message: &str) {
        assert_eq!(
            UdpEchoSpec::try_from(task).unwrap_err().to_string(),
            message
        );
    }

    #[test]
    fn echo_defaults() {
        let spec = UdpEchoSpec::try_from(echo("198.18.0.12", 65507, 3)).unwrap();
        assert_eq!(spec.size.get(), 65507);
        assert_eq!(
            (spec.interval, spec.timeout),
            (
                super::super::DEFAULT_INTERVAL,
                super::super::DEFAULT_TIMEOUT
            )
        );
    }

    #[test_case(0, Ok(DEFAULT_LIFETIME) ; "default")]
    #[test_case(300_000_000, Ok(MAX_LIFETIME) ; "max")]
    #[test_case(300_000_001, Err(InvalidResponderTask::Lifetime(300_000_001)) ; "over")]
    #[test_case(999, Err(InvalidResponderTask::Lifetime(999)) ; "under a millisecond")]
    fn responder_lifetimes(us: u64, expected: Result<Duration, InvalidResponderTask>) {
        let got =
            ResponderSpec::try_from(pb::ResponderTask { lifetime_us: us }).map(|s| s.lifetime);
        assert_eq!(got, expected);
    }

    fn netns(target: Option<pb::netns_ref::Target>) -> pb::NetnsRef {
        pb::NetnsRef {
            target,
            label: "pod default/web-0".into(),
        }
    }

    #[test]
    fn netns_refs() {
        use pb::netns_ref::Target;
        let (target, label) = netns_target(netns(Some(Target::Path(
            "/run/netns/mesh-pod-web-0".into(),
        ))))
        .unwrap();
        assert_eq!(
            target,
            NetnsTarget::Path("/run/netns/mesh-pod-web-0".into())
        );
        assert_eq!(label, "pod default/web-0");
        assert_eq!(
            netns_target(netns(Some(Target::Pid(42)))).unwrap().0,
            NetnsTarget::Pid(42)
        );
        assert_eq!(netns_target(netns(None)), Err(InvalidNetns::Empty));
        assert_eq!(
            netns_target(netns(Some(Target::Pid(0)))),
            Err(InvalidNetns::Pid)
        );
        for bad in ["", "run/netns/x", "/run/netns/../../etc/passwd", "/a\0b"] {
            let err = netns_target(netns(Some(Target::Path(bad.into())))).unwrap_err();
            assert_eq!(err, InvalidNetns::Path(bad.into()));
            let wire = pb::TaskError::from(&err);
            assert_eq!(wire.kind(), pb::task_error::Kind::InvalidInput);
        }
    }

    #[test]
    fn echo_events_become_wire_replies() {
        let reply = pb::UdpEchoReply::from(&EchoEvent {
            seq: 2,
            kind: EchoEventKind::Reply {
                rtt: Duration::from_micros(120),
                bytes: 100,
            },
        });
        assert_eq!(
            (reply.seq, reply.status.as_str(), reply.rtt_ns, reply.bytes),
            (2, "reply", 120_000, 100)
        );
        let err = pb::UdpEchoReply::from(&EchoEvent {
            seq: 3,
            kind: EchoEventKind::SendError {
                detail: "local error: message too long, mtu=1400".into(),
            },
        });
        assert_eq!(
            (err.status.as_str(), err.detail.as_str()),
            ("send_error", "local error: message too long, mtu=1400")
        );
    }
}
