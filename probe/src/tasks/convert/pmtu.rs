//! The path-MTU task's part of the protobuf conversion: `pb::PmtuTask` becomes a [`PmtuSpec`] with
//! typed errors naming the field and its range, and the search's steps and
//! report become `pb` messages.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use probemesh_proto::pb;

use super::{is_hostname, nanos, parse_ip};
use crate::tasks::pmtu::search::{Attempts, Conclusion, MAX_MTU, MIN_MTU, Step, Verdict};
use crate::tasks::pmtu::{PmtuReport, PmtuSpec};
use crate::types::Mtu;

/// Wait per probe when the wire says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait per probe.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest wait per probe; shorter ones are raised to it.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Probes per size when the wire says 0.
pub const DEFAULT_ATTEMPTS: u8 = 2;

/// Why a `pb::PmtuTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPmtuTask {
    /// Empty, too long, or with characters no hostname has.
    #[error(
        "pmtu.target: {0:?} is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')"
    )]
    Target(String),
    /// An IPv6 literal: the search speaks ICMPv4 only.
    #[error("pmtu.target: {0} is an IPv6 address; only IPv4 targets are supported")]
    Ipv6Target(Ipv6Addr),
    /// Outside what an IPv4 packet can be.
    #[error("pmtu.max_mtu: {0} is out of range 68..=65535 (0 = the interface MTU)")]
    MaxMtu(u32),
    /// Too many probes per size.
    #[error("pmtu.attempts: {0} is out of range 1..=10 (0 = 2)")]
    Attempts(u32),
    /// Waiting longer than the bound per probe.
    #[error("pmtu.timeout_us: {0} µs is out of range 1..=5000000 (0 = 1 s)")]
    Timeout(u64),
}

impl TryFrom<pb::PmtuTask> for PmtuSpec {
    type Error = InvalidPmtuTask;

    fn try_from(task: pb::PmtuTask) -> Result<Self, InvalidPmtuTask> {
        match parse_ip(&task.target) {
            Some(IpAddr::V6(v6)) => return Err(InvalidPmtuTask::Ipv6Target(v6)),
            Some(IpAddr::V4(_)) => {}
            None if is_hostname(&task.target) => {}
            None => return Err(InvalidPmtuTask::Target(task.target)),
        }
        let max_mtu = match task.max_mtu {
            0 => None,
            m if (MIN_MTU.0..=MAX_MTU.0).contains(&m) => Some(Mtu(m)),
            m => return Err(InvalidPmtuTask::MaxMtu(m)),
        };
        let attempts = match task.attempts {
            0 => Attempts::new(DEFAULT_ATTEMPTS),
            n => u8::try_from(n).ok().and_then(Attempts::new),
        }
        .ok_or(InvalidPmtuTask::Attempts(task.attempts))?;
        let timeout =
            bounded_timeout(task.timeout_us).ok_or(InvalidPmtuTask::Timeout(task.timeout_us))?;
        Ok(PmtuSpec {
            target: task.target,
            max_mtu,
            timeout,
            attempts,
        })
    }
}

/// A per-probe timeout from the wire: 0 means [`DEFAULT_TIMEOUT`]; above
/// [`MAX_TIMEOUT`] is refused (`None`); below [`MIN_TIMEOUT`] is raised.
fn bounded_timeout(us: u64) -> Option<Duration> {
    match Duration::from_micros(us) {
        Duration::ZERO => Some(DEFAULT_TIMEOUT),
        t if t > MAX_TIMEOUT => None,
        t => Some(t.max(MIN_TIMEOUT)),
    }
}

impl From<&Step> for pb::PmtuStep {
    fn from(step: &Step) -> Self {
        let (reported_mtu, from) = match step.verdict {
            Verdict::Ok | Verdict::Lost => (None, String::new()),
            Verdict::FragNeeded { from, mtu } => (mtu, from.to_string()),
            Verdict::LocalTooBig { mtu } => (mtu, String::new()),
        };
        pb::PmtuStep {
            mtu: step.size.0,
            outcome: step.verdict.name().to_owned(),
            reported_mtu: reported_mtu.map_or(0, |m| m.0),
            from,
        }
    }
}

/// The wire result of a finished search of `spec`. An unreachable target
/// has `path_mtu` 0.
pub fn pmtu_result(spec: &PmtuSpec, report: &PmtuReport) -> pb::PmtuResult {
    let path_mtu = match report.conclusion {
        Conclusion::PathMtu { path_mtu, .. } => path_mtu.0,
        Conclusion::Unreachable => 0,
    };
    let (frag_needed_from, frag_needed_mtu) = report
        .frag_needed
        .map_or((String::new(), 0), |(from, mtu)| {
            (from.to_string(), mtu.map_or(0, |m| m.0))
        });
    pb::PmtuResult {
        target: spec.target.clone(),
        address: report.address.to_string(),
        interface: report.egress.interface.clone(),
        interface_mtu: report.egress.mtu.0,
        path_mtu,
        blackhole: report.conclusion.blackhole(),
        frag_needed_from,
        frag_needed_mtu,
        steps: report.steps.iter().map(Into::into).collect(),
        elapsed_ns: nanos(report.elapsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::pmtu::Egress;
    use crate::tasks::pmtu::search::Limit;
    use std::net::Ipv4Addr;
    use test_case::test_case;

    fn task(target: &str) -> pb::PmtuTask {
        pb::PmtuTask {
            target: target.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let spec = PmtuSpec::try_from(task("198.18.0.12")).unwrap();
        assert_eq!(spec.max_mtu, None);
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(spec.attempts.get(), 2);
    }

    #[test_case(pb::PmtuTask { max_mtu: 67, ..task("h") }, "pmtu.max_mtu: 67 is out of range 68..=65535 (0 = the interface MTU)" ; "mtu below floor")]
    #[test_case(pb::PmtuTask { max_mtu: 65536, ..task("h") }, "pmtu.max_mtu: 65536 is out of range 68..=65535 (0 = the interface MTU)" ; "mtu above max")]
    #[test_case(pb::PmtuTask { attempts: 11, ..task("h") }, "pmtu.attempts: 11 is out of range 1..=10 (0 = 2)" ; "attempts")]
    #[test_case(pb::PmtuTask { timeout_us: 5_000_001, ..task("h") }, "pmtu.timeout_us: 5000001 µs is out of range 1..=5000000 (0 = 1 s)" ; "timeout")]
    #[test_case(task("::1"), "pmtu.target: ::1 is an IPv6 address; only IPv4 targets are supported" ; "ipv6")]
    #[test_case(task(""), "pmtu.target: \"\" is not an IPv4 address or a hostname (1..=253 bytes of letters, digits, '-', '_', '.')" ; "empty")]
    fn invalid_tasks_name_the_field(task: pb::PmtuTask, message: &str) {
        assert_eq!(PmtuSpec::try_from(task).unwrap_err().to_string(), message);
    }

    #[test]
    fn results_carry_the_black_hole_and_the_frag_needed() {
        let spec = PmtuSpec::try_from(task("198.18.0.12")).unwrap();
        let router = Ipv4Addr::new(198, 18, 0, 1);
        let report = PmtuReport {
            address: Ipv4Addr::new(198, 18, 0, 12),
            egress: Egress {
                interface: "eth0".into(),
                mtu: Mtu(1500),
            },
            conclusion: Conclusion::PathMtu {
                path_mtu: Mtu(1400),
                limit: Some(Limit::FragNeeded),
            },
            frag_needed: Some((router, Some(Mtu(1400)))),
            steps: vec![Step {
                size: Mtu(1500),
                verdict: Verdict::FragNeeded {
                    from: router,
                    mtu: Some(Mtu(1400)),
                },
            }],
            elapsed: Duration::from_millis(3),
        };
        let wire = pmtu_result(&spec, &report);
        assert_eq!(
            (wire.path_mtu, wire.interface_mtu, wire.blackhole),
            (1400, 1500, false)
        );
        assert_eq!(
            (wire.frag_needed_from.as_str(), wire.frag_needed_mtu),
            ("198.18.0.1", 1400)
        );
        assert_eq!(wire.steps[0].outcome, "frag_needed");
        assert_eq!(wire.steps[0].reported_mtu, 1400);
        let unreachable = pmtu_result(
            &spec,
            &PmtuReport {
                conclusion: Conclusion::Unreachable,
                frag_needed: None,
                ..report
            },
        );
        assert_eq!((unreachable.path_mtu, unreachable.blackhole), (0, false));
    }
}
