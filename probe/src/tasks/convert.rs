//! The protobuf conversion of the task engine (no gRPC happens here): `pb`
//! tasks become validated specs ([`TryFrom`], with typed `Invalid*` errors
//! naming the field and its allowed range), and the engine's events,
//! summaries and errors become `pb` messages. No other module of
//! [`crate::tasks`] builds a `pb` type; one submodule per task family.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use probemesh_proto::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::Progress;
use super::error::Error;
use super::ping::{PingEvent, PingEventKind, PingSummary};
use super::pmtu::search::Step;
use super::resolve::parse_ip;
use super::responder::ResponderReady;
use super::spec::TaskSpec;
use super::stats::RttStats;
use super::tcping::{ConnectOutcome, TcpingAttempt, TcpingSummary};
use super::trace::session::RoundReport;
use super::types::{PingSpec, TcpingSpec};
use super::udp_echo::EchoEvent;
use crate::capture::CaptureError;
use crate::types::{PayloadSize, ProbeCount, Ttl};

mod batch;
mod capture;
mod inspect;
mod pmtu;
mod trace;
mod transfer;

pub use capture::{InvalidCaptureTask, capture_result};
pub use inspect::{
    InvalidDnsTask, InvalidListenerTask, InvalidNodeFactsTask, dns_result, listener_result,
    node_facts,
};
pub use pmtu::{InvalidPmtuTask, pmtu_result};
pub use trace::{InvalidTraceTask, trace_result};
pub use transfer::{
    InvalidNetns, InvalidResponderTask, InvalidTcpTransferTask, InvalidUdpEchoTask, netns_target,
    responder_summary, tcp_transfer_result, udp_echo_summary,
};

/// Interval used when the wire says 0.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Per-probe timeout used when the wire says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Intervals and timeouts are clamped to at least this.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// Intervals and timeouts are clamped to at most this.
pub const MAX_DURATION: Duration = Duration::from_secs(60);
/// Longest hostname, bytes (RFC 1035).
const MAX_HOST_LEN: usize = 253;

/// Why a `pb::Task` is not a task this probe can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTask {
    /// No `kind`, or one this probe does not know (a newer coordinator).
    #[error("task.kind: missing or unknown task kind (is the coordinator newer than this probe?)")]
    UnknownKind,
    /// A bad ping task.
    #[error(transparent)]
    Ping(#[from] InvalidPingTask),
    /// A bad tcping task.
    #[error(transparent)]
    Tcping(#[from] InvalidTcpingTask),
    /// A bad TCP transfer task.
    #[error(transparent)]
    TcpTransfer(#[from] InvalidTcpTransferTask),
    /// A bad UDP echo task.
    #[error(transparent)]
    UdpEcho(#[from] InvalidUdpEchoTask),
    /// A bad responder task.
    #[error(transparent)]
    Responder(#[from] InvalidResponderTask),
    /// A bad DNS task.
    #[error(transparent)]
    Dns(#[from] InvalidDnsTask),
    /// A bad listener task.
    #[error(transparent)]
    Listener(#[from] InvalidListenerTask),
    /// A bad node-facts task.
    #[error(transparent)]
    NodeFacts(#[from] InvalidNodeFactsTask),
    /// A bad path-MTU task.
    #[error(transparent)]
    Pmtu(#[from] pmtu::InvalidPmtuTask),
    /// A bad trace task.
    #[error(transparent)]
    Trace(#[from] trace::InvalidTraceTask),
    /// A bad capture task.
    #[error(transparent)]
    Capture(#[from] InvalidCaptureTask),
}

/// Why a `pb::PingTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPingTask {
    /// Empty, too long, or with characters no hostname has.
    #[error(
        "ping.target: {0:?} is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')"
    )]
    Target(String),
    /// An IPv6 literal: this engine speaks ICMPv4 only.
    #[error("ping.target: {0} is an IPv6 address; only IPv4 targets are supported")]
    Ipv6Target(Ipv6Addr),
    /// Payload larger than an IPv4 datagram can carry.
    #[error("ping.size: {0} bytes is out of range 0..=65507")]
    Size(u32),
    /// Count 0 or too many echoes.
    #[error("ping.count: {0} is out of range 1..=10000")]
    Count(u32),
    /// TTL above 255.
    #[error("ping.ttl: {0} is out of range 1..=255 (0 = system default)")]
    Ttl(u32),
}

/// Why a `pb::TcpingTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTcpingTask {
    /// Empty, too long, or with characters no hostname has.
    #[error(
        "tcping.host: {0:?} is not an IP address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')"
    )]
    Host(String),
    /// Port 0 or above 65535.
    #[error("tcping.port: {0} is out of range 1..=65535")]
    Port(u32),
    /// Count 0 or too many attempts.
    #[error("tcping.count: {0} is out of range 1..=10000")]
    Count(u32),
}

impl TryFrom<pb::Task> for TaskSpec {
    type Error = InvalidTask;

    fn try_from(task: pb::Task) -> Result<Self, InvalidTask> {
        match task.kind {
            Some(pb::task::Kind::Ping(ping)) => Ok(TaskSpec::Ping(ping.try_into()?)),
            Some(pb::task::Kind::Tcping(tcping)) => Ok(TaskSpec::Tcping(tcping.try_into()?)),
            Some(pb::task::Kind::TcpTransfer(t)) => Ok(TaskSpec::TcpTransfer(t.try_into()?)),
            Some(pb::task::Kind::UdpEcho(t)) => Ok(TaskSpec::UdpEcho(t.try_into()?)),
            Some(pb::task::Kind::Responder(t)) => Ok(TaskSpec::Responder(t.try_into()?)),
            Some(pb::task::Kind::Dns(t)) => Ok(TaskSpec::Dns(t.try_into()?)),
            Some(pb::task::Kind::Listener(t)) => Ok(TaskSpec::Listener(t.try_into()?)),
            Some(pb::task::Kind::NodeFacts(t)) => Ok(TaskSpec::NodeFacts(t.try_into()?)),
            Some(pb::task::Kind::Pmtu(t)) => Ok(TaskSpec::Pmtu(t.try_into()?)),
            Some(pb::task::Kind::Trace(t)) => Ok(TaskSpec::Trace(t.try_into()?)),
            Some(pb::task::Kind::Capture(t)) => {
                let mut spec = super::capture::CaptureTaskSpec::try_from(t)?;
                spec.task_id = task.task_id;
                spec.run = task.run_id;
                Ok(TaskSpec::Capture(spec))
            }
            None => Err(InvalidTask::UnknownKind),
        }
    }
}

impl TryFrom<pb::PingTask> for PingSpec {
    type Error = InvalidPingTask;

    fn try_from(task: pb::PingTask) -> Result<Self, InvalidPingTask> {
        match parse_ip(&task.target) {
            Some(IpAddr::V6(v6)) => return Err(InvalidPingTask::Ipv6Target(v6)),
            Some(IpAddr::V4(_)) => {}
            None if is_hostname(&task.target) => {}
            None => return Err(InvalidPingTask::Target(task.target)),
        }
        let size = u16::try_from(task.size)
            .ok()
            .and_then(PayloadSize::new)
            .ok_or(InvalidPingTask::Size(task.size))?;
        let count = probe_count(task.count).ok_or(InvalidPingTask::Count(task.count))?;
        let ttl = match task.ttl {
            0 => None,
            hops => Some(
                u8::try_from(hops)
                    .ok()
                    .and_then(Ttl::new)
                    .ok_or(InvalidPingTask::Ttl(hops))?,
            ),
        };
        let delivery = batch::delivery(task.progress());
        Ok(PingSpec {
            target: task.target,
            size,
            dont_fragment: task.dont_fragment,
            count,
            interval: duration_us(task.interval_us, DEFAULT_INTERVAL),
            timeout: duration_us(task.timeout_us, DEFAULT_TIMEOUT),
            ttl,
            delivery,
        })
    }
}

impl TryFrom<pb::TcpingTask> for TcpingSpec {
    type Error = InvalidTcpingTask;

    fn try_from(task: pb::TcpingTask) -> Result<Self, InvalidTcpingTask> {
        if parse_ip(&task.host).is_none() && !is_hostname(&task.host) {
            return Err(InvalidTcpingTask::Host(task.host));
        }
        let port = u16::try_from(task.port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or(InvalidTcpingTask::Port(task.port))?;
        let count = probe_count(task.count).ok_or(InvalidTcpingTask::Count(task.count))?;
        Ok(TcpingSpec {
            host: task.host,
            port,
            count,
            timeout: duration_us(task.timeout_us, DEFAULT_TIMEOUT),
            interval: duration_us(task.interval_us, DEFAULT_INTERVAL),
        })
    }
}

pub(super) fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn probe_count(count: u32) -> Option<ProbeCount> {
    u16::try_from(count).ok().and_then(ProbeCount::new)
}

/// Microseconds from the wire: 0 means `default`; others are clamped to
/// [`MIN_DURATION`]..=[`MAX_DURATION`].
fn duration_us(us: u64, default: Duration) -> Duration {
    if us == 0 {
        default
    } else {
        Duration::from_micros(us).clamp(MIN_DURATION, MAX_DURATION)
    }
}

pub(super) fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn task_error(kind: pb::task_error::Kind, message: String) -> pb::TaskError {
    pb::TaskError {
        kind: kind.into(),
        message,
    }
}

impl From<&InvalidTask> for pb::TaskError {
    fn from(invalid: &InvalidTask) -> Self {
        task_error(pb::task_error::Kind::InvalidInput, invalid.to_string())
    }
}

impl From<&Error> for pb::TaskError {
    fn from(error: &Error) -> Self {
        use pb::task_error::Kind;
        let kind = match error {
            Error::Resolve { .. } | Error::NoAddress { .. } => Kind::InvalidInput,
            Error::ResolveTimeout { .. }
            | Error::Socket { .. }
            | Error::Send { .. }
            | Error::Recv { .. }
            | Error::ReadProc { .. }
            | Error::Platform(_)
            | Error::Artifact { .. } => Kind::ProbeFailure,
            Error::Cancelled { .. } | Error::Capture(CaptureError::Cancelled { .. }) => {
                Kind::Cancelled
            }
            Error::Capture(e) if e.is_invalid_input() => Kind::InvalidInput,
            Error::Capture(_) => Kind::ProbeFailure,
        };
        task_error(kind, error.to_string())
    }
}

impl From<RttStats> for pb::RttStats {
    fn from(s: RttStats) -> Self {
        pb::RttStats {
            min_ns: nanos(s.min),
            avg_ns: nanos(s.avg),
            max_ns: nanos(s.max),
            mdev_ns: nanos(s.mdev),
        }
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<&PingEvent> for pb::PingReply {
    fn from(event: &PingEvent) -> Self {
        use pb::ping_reply::Status;
        let mut reply = pb::PingReply {
            seq: u32::from(event.seq.0),
            ..Default::default()
        };
        match &event.kind {
            PingEventKind::Reply {
                from,
                bytes,
                ttl,
                rtt,
                checksum_ok,
            } => {
                reply.set_status(Status::Reply);
                reply.from = from.to_string();
                reply.bytes = saturating_u32(*bytes);
                reply.ttl = u32::from(*ttl);
                reply.rtt_ns = nanos(*rtt);
                if !checksum_ok {
                    "BAD CHECKSUM".clone_into(&mut reply.detail);
                }
            }
            PingEventKind::Timeout => reply.set_status(Status::Timeout),
            PingEventKind::IcmpError {
                from,
                bytes,
                ttl,
                rtt,
                error,
            } => {
                reply.set_status(Status::IcmpError);
                reply.from = from.to_string();
                reply.bytes = saturating_u32(*bytes);
                reply.ttl = u32::from(*ttl);
                reply.rtt_ns = nanos(*rtt);
                reply.icmp_type = u32::from(error.icmp_type);
                reply.icmp_code = u32::from(error.code);
                reply.mtu = error.mtu.map_or(0, |m| u32::from(m.0));
                reply.detail = error.describe();
            }
            PingEventKind::SendError { detail } => {
                reply.set_status(Status::SendError);
                reply.detail.clone_from(detail);
            }
        }
        reply
    }
}

/// The wire summary of a finished ping of `spec`.
pub fn ping_summary(spec: &PingSpec, summary: &PingSummary) -> pb::PingSummary {
    pb::PingSummary {
        target: spec.target.clone(),
        address: summary.address.to_string(),
        size: u32::from(spec.size.get()),
        transmitted: summary.transmitted,
        received: summary.received,
        errors: summary.errors,
        rtt: summary.rtt.map(Into::into),
        elapsed_ns: nanos(summary.elapsed),
        dont_fragment: spec.dont_fragment,
        icmp_errors: summary
            .icmp_errors
            .iter()
            .map(|e| pb::IcmpErrorCount {
                from: e.from.to_string(),
                r#type: u32::from(e.error.icmp_type),
                code: u32::from(e.error.code),
                mtu: e.error.mtu.map_or(0, |m| u32::from(m.0)),
                count: e.count,
                detail: e.error.describe(),
            })
            .collect(),
        local_errors: summary
            .local_errors
            .iter()
            .map(|e| pb::LocalErrorCount {
                errno: e.errno.clone(),
                detail: e.detail.clone(),
                count: e.count,
            })
            .collect(),
    }
}

impl From<&TcpingAttempt> for pb::TcpingAttempt {
    fn from(attempt: &TcpingAttempt) -> Self {
        use pb::tcping_attempt::Outcome;
        let (outcome, detail) = match &attempt.outcome {
            ConnectOutcome::Connected => (Outcome::Connected, String::new()),
            ConnectOutcome::Refused => (Outcome::Refused, "connection refused".to_owned()),
            ConnectOutcome::Timeout => (Outcome::Timeout, "connection timed out".to_owned()),
            ConnectOutcome::Unreachable(detail) => (Outcome::Unreachable, detail.clone()),
            ConnectOutcome::Error(detail) => (Outcome::Error, detail.clone()),
        };
        pb::TcpingAttempt {
            seq: attempt.seq,
            outcome: outcome.into(),
            latency_ns: nanos(attempt.latency),
            address: attempt.address.to_string(),
            detail,
        }
    }
}

/// The wire summary of a finished tcping of `spec`.
pub fn tcping_summary(spec: &TcpingSpec, summary: &TcpingSummary) -> pb::TcpingSummary {
    pb::TcpingSummary {
        host: spec.host.clone(),
        address: summary.address.ip().to_string(),
        port: u32::from(spec.port),
        attempted: summary.attempted,
        connected: summary.connected,
        refused: summary.refused,
        timed_out: summary.timed_out,
        failed: summary.failed,
        latency: summary.latency.map(Into::into),
        elapsed_ns: nanos(summary.elapsed),
    }
}

/// The progress event of each engine's event type (the capture task's is
/// in [`capture`]).
macro_rules! progress_event {
    ($($engine:ty => $variant:ident),* $(,)?) => {$(
        impl From<$engine> for pb::task_progress::Event {
            fn from(event: $engine) -> Self {
                pb::task_progress::Event::$variant((&event).into())
            }
        }
    )*};
}

progress_event! {
    PingEvent => PingReply,
    TcpingAttempt => TcpingAttempt,
    EchoEvent => UdpReply,
    ResponderReady => ResponderReady,
    Step => PmtuStep,
    RoundReport => TraceRound,
}

/// Carries a task's events to the probe link as `pb::TaskProgress` tagged
/// with `task_id`, in order, until the task drops its [`Progress`]. Waits
/// for room on `link` (back-pressure reaches the task through its own
/// channel) unless cancelled; after a cancel, an event goes out only if the
/// link has room. A closed `link` is not an error: the link is gone and
/// will cancel the task.
pub async fn forward<E: Into<pb::task_progress::Event>>(
    task_id: String,
    mut events: mpsc::Receiver<E>,
    link: mpsc::Sender<pb::TaskProgress>,
    cancel: CancellationToken,
) {
    while let Some(event) = events.recv().await {
        let progress = pb::TaskProgress {
            task_id: task_id.clone(),
            event: Some(event.into()),
            ..Default::default()
        };
        // An event the task handed over before a cancel still goes out if
        // the link has room, as it would have without this hop.
        tokio::select! {
            biased;
            sent = link.send(progress) => {
                if sent.is_err() {
                    tracing::debug!(%task_id, "progress receiver closed");
                }
            }
            () = cancel.cancelled() => {}
        }
    }
}

/// Where a running task's progress goes on the wire: the link, tagged with
/// the task's id.
#[derive(Debug, Clone)]
pub struct WireProgress {
    /// The task's id, as the coordinator gave it.
    pub task_id: String,
    /// The probe link's outbound progress channel.
    pub link: mpsc::Sender<pb::TaskProgress>,
    /// The task's cancellation.
    pub cancel: CancellationToken,
}

impl WireProgress {
    /// Runs `task` with a [`Progress`] whose events reach the link as
    /// `pb::TaskProgress`, forwarding beside it until the task ends (and
    /// drops its `Progress`), then returns the task's output.
    pub async fn run<E, F, Fut, T>(&self, task: F) -> T
    where
        E: Into<pb::task_progress::Event>,
        F: FnOnce(Progress<E>) -> Fut,
        Fut: Future<Output = T>,
    {
        let (tx, rx) = mpsc::channel(1);
        let forward = forward(
            self.task_id.clone(),
            rx,
            self.link.clone(),
            self.cancel.clone(),
        );
        let (output, ()) = tokio::join!(task(Progress::new(tx)), forward);
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn ping_task(target: &str) -> pb::PingTask {
        pb::PingTask {
            target: target.into(),
            size: 56,
            count: 3,
            ..Default::default()
        }
    }

    fn task(kind: Option<pb::task::Kind>) -> pb::Task {
        pb::Task {
            task_id: "t".into(),
            kind,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_clamps() {
        let spec = PingSpec::try_from(ping_task("198.18.0.11")).unwrap();
        assert_eq!(spec.interval, DEFAULT_INTERVAL);
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(spec.ttl, None, "ttl 0 is the system default");
        assert_eq!(spec.size.get(), 56);
        let spec = PingSpec::try_from(pb::PingTask {
            interval_us: 1,
            timeout_us: u64::MAX,
            ttl: 255,
            size: 65507,
            count: 10_000,
            ..ping_task("node-1.lab")
        })
        .unwrap();
        assert_eq!((spec.interval, spec.timeout), (MIN_DURATION, MAX_DURATION));
        assert_eq!(spec.ttl.map(Ttl::get), Some(255));
        assert_eq!(spec.count.get(), 10_000);
    }

    #[test_case(pb::PingTask { size: 65508, ..ping_task("127.0.0.1") }, "ping.size: 65508 bytes is out of range 0..=65507" ; "size one over")]
    #[test_case(pb::PingTask { size: 70000, dont_fragment: true, ..ping_task("127.0.0.1") }, "ping.size: 70000 bytes is out of range 0..=65507" ; "size df")]
    #[test_case(pb::PingTask { ttl: 256, ..ping_task("127.0.0.1") }, "ping.ttl: 256 is out of range 1..=255 (0 = system default)" ; "ttl 256")]
    #[test_case(pb::PingTask { count: 0, ..ping_task("127.0.0.1") }, "ping.count: 0 is out of range 1..=10000" ; "count 0")]
    #[test_case(pb::PingTask { count: 10_001, ..ping_task("127.0.0.1") }, "ping.count: 10001 is out of range 1..=10000" ; "count over")]
    #[test_case(ping_task(""), "ping.target: \"\" is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')" ; "empty target")]
    #[test_case(ping_task("a b"), "ping.target: \"a b\" is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')" ; "space")]
    #[test_case(ping_task("::1"), "ping.target: ::1 is an IPv6 address; only IPv4 targets are supported" ; "ipv6")]
    fn invalid_ping_tasks_name_the_field_and_range(task: pb::PingTask, message: &str) {
        let err = PingSpec::try_from(task).unwrap_err();
        assert_eq!(err.to_string(), message);
        let wire = pb::TaskError::from(&InvalidTask::from(err));
        assert_eq!(wire.kind(), pb::task_error::Kind::InvalidInput);
        assert_eq!(wire.message, message);
    }

    #[test]
    fn long_hostnames_are_rejected() {
        let name = "a".repeat(254);
        assert!(matches!(
            PingSpec::try_from(ping_task(&name)),
            Err(InvalidPingTask::Target(_))
        ));
        assert!(PingSpec::try_from(ping_task(&"a".repeat(253))).is_ok());
    }

    #[test_case(0, Some(InvalidTcpingTask::Port(0)) ; "port 0")]
    #[test_case(65536, Some(InvalidTcpingTask::Port(65536)) ; "port over")]
    #[test_case(443, None ; "port ok")]
    fn tcping_ports(port: u32, expected: Option<InvalidTcpingTask>) {
        let task = pb::TcpingTask {
            host: "[::1]".into(),
            port,
            count: 1,
            ..Default::default()
        };
        assert_eq!(TcpingSpec::try_from(task).err(), expected);
    }

    #[test]
    fn tcping_host_and_count() {
        let task = pb::TcpingTask {
            host: "x/y".into(),
            port: 1,
            count: 1,
            ..Default::default()
        };
        assert_eq!(
            TcpingSpec::try_from(task).unwrap_err().to_string(),
            "tcping.host: \"x/y\" is not an IP address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')"
        );
        let task = pb::TcpingTask {
            host: "h".into(),
            port: 1,
            count: 0,
            ..Default::default()
        };
        assert_eq!(
            TcpingSpec::try_from(task).unwrap_err(),
            InvalidTcpingTask::Count(0)
        );
    }

    #[test]
    fn unknown_kind_is_invalid_input() {
        let err = TaskSpec::try_from(task(None)).unwrap_err();
        assert_eq!(err, InvalidTask::UnknownKind);
        let wire = pb::TaskError::from(&err);
        assert_eq!(wire.kind(), pb::task_error::Kind::InvalidInput);
        assert!(wire.message.starts_with("task.kind:"), "{}", wire.message);
        let ok = TaskSpec::try_from(task(Some(pb::task::Kind::Ping(ping_task("10.0.0.1")))));
        assert!(matches!(ok, Ok(TaskSpec::Ping(_))));
    }

    #[test]
    fn engine_errors_map_to_kinds() {
        use pb::task_error::Kind;
        let kind = |e: Error| pb::TaskError::from(&e).kind();
        assert_eq!(
            kind(Error::NoAddress {
                host: "h".into(),
                family: "IPv4"
            }),
            Kind::InvalidInput
        );
        assert_eq!(
            kind(Error::Cancelled { done: 1, total: 2 }),
            Kind::Cancelled
        );
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        let e = Error::Socket {
            op: "socket",
            source: eperm,
        };
        assert!(!e.is_retryable());
        assert_eq!(kind(e), Kind::ProbeFailure);
    }

    #[test]
    fn ping_events_become_wire_replies() {
        use crate::types::Seq;
        use probemesh_packet::icmp::{EchoError, NextHopMtu};
        let event = PingEvent {
            seq: Seq(4),
            kind: PingEventKind::IcmpError {
                from: std::net::Ipv4Addr::LOCALHOST,
                bytes: 36,
                ttl: 64,
                rtt: Duration::from_micros(250),
                error: EchoError {
                    icmp_type: 3,
                    code: 4,
                    mtu: Some(NextHopMtu(1440)),
                },
            },
        };
        let reply = pb::PingReply::from(&event);
        assert_eq!(reply.status(), pb::ping_reply::Status::IcmpError);
        assert_eq!(
            (reply.seq, reply.mtu, reply.rtt_ns, reply.bytes),
            (4, 1440, 250_000, 36)
        );
        let timeout = pb::PingReply::from(&PingEvent {
            seq: Seq(5),
            kind: PingEventKind::Timeout,
        });
        assert_eq!(
            (timeout.seq, timeout.status(), timeout.rtt_ns),
            (5, pb::ping_reply::Status::Timeout, 0)
        );
    }

    #[tokio::test]
    async fn events_reach_the_link_tagged_in_order_until_cancelled() {
        let attempt = |seq| TcpingAttempt {
            seq,
            outcome: ConnectOutcome::Refused,
            latency: Duration::from_millis(1),
            address: "127.0.0.1:1".parse().unwrap(),
        };
        let (link, mut wire) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let progress = WireProgress {
            task_id: "t1".into(),
            link,
            cancel: cancel.clone(),
        };
        progress
            .run(|events| async move {
                events.send(attempt(1), &cancel).await;
                events.send(attempt(2), &cancel).await;
                cancel.cancel();
                events.send(attempt(3), &cancel).await;
            })
            .await;
        let mut seen = Vec::new();
        while let Ok(p) = wire.try_recv() {
            assert_eq!(p.task_id, "t1");
            let Some(pb::task_progress::Event::TcpingAttempt(a)) = p.event else {
                panic!("{p:?}");
            };
            seen.push(a.seq);
        }
        assert_eq!(seen, [1, 2], "nothing goes out after the cancel");
    }
}
