//! The trace task's part of the protobuf conversion: `pb::TraceTask` becomes a [`TraceSpec`]
//! with typed errors naming the field and its range, and rounds and reports
//! become `pb` messages.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use probemesh_proto::pb;

use super::{is_hostname, parse_ip};
use crate::tasks::trace::reading::Hop;
use crate::tasks::trace::session::RoundReport;
use crate::tasks::trace::{Rounds, TraceMode, TraceReport, TraceSpec};
use crate::types::Ttl;

/// Rounds when the wire says 0 (`mtr -c` default).
pub const DEFAULT_COUNT: u8 = 10;
/// Highest TTL when the wire says 0.
pub const DEFAULT_MAX_HOPS: u8 = 30;
/// The most hops a trace probes.
pub const MAX_HOPS: u8 = 64;
/// First UDP port when the wire says 0 (traceroute's).
pub const DEFAULT_UDP_PORT: u16 = 33_434;
/// TCP port when the wire says 0.
pub const DEFAULT_TCP_PORT: u16 = 80;
/// Interval and timeout when the wire says 0.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);
/// Shortest interval or timeout; shorter ones are raised to it.
pub const MIN_WAIT: Duration = Duration::from_millis(1);
/// Longest per-probe timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest interval between rounds.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// Why a `pb::TraceTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTraceTask {
    /// Empty, too long, or with characters no hostname has.
    #[error(
        "trace.target: {0:?} is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')"
    )]
    Target(String),
    /// An IPv6 literal: traces are IPv4 only.
    #[error("trace.target: {0} is an IPv6 address; only IPv4 targets are supported")]
    Ipv6Target(Ipv6Addr),
    /// A mode this probe does not know.
    #[error("trace.mode: {0} is not one of 0 (icmp), 1 (udp), 2 (tcp)")]
    Mode(i32),
    /// Port above 65535.
    #[error("trace.port: {0} is out of range 1..=65535 (0 = 33434 for udp, 80 for tcp)")]
    Port(u32),
    /// Too many rounds.
    #[error("trace.count: {0} is out of range 1..=100 (0 = 10)")]
    Count(u32),
    /// Too many hops.
    #[error("trace.max_hops: {0} is out of range 1..=64 (0 = 30)")]
    MaxHops(u32),
    /// Interval above the bound.
    #[error("trace.interval_us: {0} µs is out of range 1..=10000000 (0 = 1 s)")]
    Interval(u64),
    /// Timeout above the bound.
    #[error("trace.timeout_us: {0} µs is out of range 1..=5000000 (0 = 1 s)")]
    Timeout(u64),
}

impl TryFrom<pb::TraceTask> for TraceSpec {
    type Error = InvalidTraceTask;

    fn try_from(task: pb::TraceTask) -> Result<Self, InvalidTraceTask> {
        use pb::trace_task::Mode;
        match parse_ip(&task.target) {
            Some(IpAddr::V6(v6)) => return Err(InvalidTraceTask::Ipv6Target(v6)),
            Some(IpAddr::V4(_)) => {}
            None if is_hostname(&task.target) => {}
            None => return Err(InvalidTraceTask::Target(task.target)),
        }
        let mode = match Mode::try_from(task.mode) {
            Ok(Mode::Icmp) => TraceMode::Icmp,
            Ok(Mode::Udp) => TraceMode::Udp,
            Ok(Mode::Tcp) => TraceMode::Tcp,
            Err(_) => return Err(InvalidTraceTask::Mode(task.mode)),
        };
        let port = match (task.port, mode) {
            (0, TraceMode::Tcp) => DEFAULT_TCP_PORT,
            (0, _) => DEFAULT_UDP_PORT,
            (p, _) => u16::try_from(p).map_err(|_| InvalidTraceTask::Port(p))?,
        };
        let count = match task.count {
            0 => Rounds::new(DEFAULT_COUNT),
            n => u8::try_from(n).ok().and_then(Rounds::new),
        }
        .ok_or(InvalidTraceTask::Count(task.count))?;
        let max_hops = match task.max_hops {
            0 => Ttl::new(DEFAULT_MAX_HOPS),
            n => u8::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_HOPS)
                .and_then(Ttl::new),
        }
        .ok_or(InvalidTraceTask::MaxHops(task.max_hops))?;
        let interval = bounded(task.interval_us, MAX_INTERVAL)
            .ok_or(InvalidTraceTask::Interval(task.interval_us))?;
        let timeout = bounded(task.timeout_us, MAX_TIMEOUT)
            .ok_or(InvalidTraceTask::Timeout(task.timeout_us))?;
        Ok(TraceSpec {
            target: task.target,
            mode,
            port,
            count,
            max_hops,
            interval,
            timeout,
        })
    }
}

/// A wait from the wire: 0 means [`DEFAULT_WAIT`]; above `max` is refused;
/// below [`MIN_WAIT`] is raised.
fn bounded(us: u64, max: Duration) -> Option<Duration> {
    match Duration::from_micros(us) {
        Duration::ZERO => Some(DEFAULT_WAIT),
        d if d > max => None,
        d => Some(d.max(MIN_WAIT)),
    }
}

impl From<&Hop> for pb::TraceHop {
    fn from(hop: &Hop) -> Self {
        let f = &hop.figures;
        pb::TraceHop {
            ttl: u32::from(hop.ttl),
            host: hop.host.map_or_else(|| "???".to_owned(), |h| h.to_string()),
            loss_pct: f.loss_pct,
            sent: f.sent,
            received: f.received,
            last_ms: f.last_ms,
            avg_ms: f.avg_ms,
            best_ms: f.best_ms,
            worst_ms: f.worst_ms,
            stdev_ms: f.stdev_ms,
        }
    }
}

impl From<&RoundReport> for pb::TraceRound {
    fn from(round: &RoundReport) -> Self {
        pb::TraceRound {
            round: round.round,
            hops: round.hops.iter().map(Into::into).collect(),
        }
    }
}

/// The wire result of a finished trace of `spec`.
pub fn trace_result(spec: &TraceSpec, report: &TraceReport) -> pb::TraceResult {
    pb::TraceResult {
        target: spec.target.clone(),
        address: report.address.to_string(),
        mode: spec.mode.name().to_owned(),
        hops: report.hops.iter().map(Into::into).collect(),
        reached: report.reached,
        reading: report.reading.lines.clone(),
        loss_from_hop: report.reading.loss_from_hop.map_or(0, u32::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn task(target: &str) -> pb::TraceTask {
        pb::TraceTask {
            target: target.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let spec = TraceSpec::try_from(task("198.18.0.12")).unwrap();
        assert_eq!(spec.mode, TraceMode::Icmp);
        assert_eq!((spec.count.get(), spec.max_hops.get()), (10, 30));
        assert_eq!((spec.interval, spec.timeout), (DEFAULT_WAIT, DEFAULT_WAIT));
        assert_eq!(spec.port, DEFAULT_UDP_PORT);
        let tcp = TraceSpec::try_from(pb::TraceTask {
            mode: pb::trace_task::Mode::Tcp.into(),
            ..task("h")
        })
        .unwrap();
        assert_eq!((tcp.mode, tcp.port), (TraceMode::Tcp, 80));
    }

    #[test_case(pb::TraceTask { count: 101, ..task("h") }, "trace.count: 101 is out of range 1..=100 (0 = 10)" ; "count")]
    #[test_case(pb::TraceTask { max_hops: 65, ..task("h") }, "trace.max_hops: 65 is out of range 1..=64 (0 = 30)" ; "hops")]
    #[test_case(pb::TraceTask { timeout_us: 5_000_001, ..task("h") }, "trace.timeout_us: 5000001 µs is out of range 1..=5000000 (0 = 1 s)" ; "timeout")]
    #[test_case(pb::TraceTask { interval_us: 10_000_001, ..task("h") }, "trace.interval_us: 10000001 µs is out of range 1..=10000000 (0 = 1 s)" ; "interval")]
    #[test_case(pb::TraceTask { port: 65_536, ..task("h") }, "trace.port: 65536 is out of range 1..=65535 (0 = 33434 for udp, 80 for tcp)" ; "port")]
    #[test_case(pb::TraceTask { mode: 7, ..task("h") }, "trace.mode: 7 is not one of 0 (icmp), 1 (udp), 2 (tcp)" ; "mode")]
    #[test_case(task("fe80::1"), "trace.target: fe80::1 is an IPv6 address; only IPv4 targets are supported" ; "ipv6")]
    #[test_case(task("a b"), "trace.target: \"a b\" is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')" ; "bad host")]
    fn invalid_tasks_name_the_field(task: pb::TraceTask, message: &str) {
        assert_eq!(TraceSpec::try_from(task).unwrap_err().to_string(), message);
    }
}
