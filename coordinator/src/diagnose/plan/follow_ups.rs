//! The second wave, decided from the first wave's results: the path where
//! something failed or lost packets, the path MTU where large packets failed
//! while small ones passed.
//!
//! The run asks again each time a check ends, so a follow-up starts the
//! moment its reason is known, not after the whole wave. Every condition
//! here only turns true as more checks end (a failure, a loss, a passing
//! small echo stay what they are), so what is asked on part of the wave is
//! also asked on all of it: the order of the answers changes nothing.

use super::*;
use crate::diagnose::model::Check;
use crate::diagnose::timing::{PMTU_WAIT, TRACE_WAIT};

/// Most path traces per run.
const MAX_TRACES: usize = 2;

/// The follow-ups `done` calls for that are not among `started` (those the
/// run already started): the path where reachability failed or lost
/// packets (at most [`MAX_TRACES`] in all), the path MTU where large
/// packets or a transfer failed while small ones passed.
pub fn follow_ups(
    plan: &DiagnosisPlan,
    done: &[Check],
    started: &[PlannedCheck],
) -> Vec<PlannedCheck> {
    let asked = |out: &[PlannedCheck], name: CheckName, host: &str| {
        started
            .iter()
            .chain(out)
            .any(|c| c.name == name && c.to == host)
    };
    let from = plan.source.spec.as_str();
    let failed = |name: CheckName, to: &str| {
        done.iter().any(|c| {
            c.name == name
                && c.direction == Direction::Forward
                && c.from == from
                && c.failed()
                && c.to.starts_with(to)
        })
    };
    let lossy = |to: &str| {
        done.iter()
            .any(|c| c.name == CheckName::Icmp && c.ran() && c.to == to && c.received < c.sent)
    };
    let mut out = Vec::new();
    let mut traces = started.iter().filter(|c| c.name == CheckName::Path).count();
    for e in &plan.target.endpoints {
        // A ClusterIP exists only in NAT rules: no hop of a trace leads to it.
        if reachable_from(&plan.source, e).is_err() || e.ip().is_none() || e.role == Role::ClusterIp
        {
            continue;
        }
        let host = e.host.as_str();
        let unreachable = failed(CheckName::Icmp, host) || failed(CheckName::TcpConnect, host);
        if (unreachable || lossy(host))
            && traces < MAX_TRACES
            && !asked(&out, CheckName::Path, host)
        {
            traces += 1;
            out.push(
                PlannedCheck::run(
                    CheckName::Path,
                    from,
                    host,
                    Direction::Forward,
                    Kind::Trace(pb::TraceTask {
                        target: host.to_owned(),
                        mode: pb::trace_task::Mode::Icmp.into(),
                        port: 0,
                        count: 10,
                        max_hops: 16,
                        interval_us: micros(Duration::from_millis(100)),
                        timeout_us: micros(plan.options.timeout.min(TRACE_WAIT)),
                    }),
                )
                .noted("something failed or lost packets: where does it stop?")
                .paced_by(e),
            );
        }
        let large_failed = failed(CheckName::IcmpLarge, host)
            || done.iter().any(|c| {
                c.name == CheckName::TcpTransfer
                    && c.failed()
                    && c.to.starts_with(host)
                    && c.transfer().is_some_and(|t| t.connected)
            });
        let small_ok = done
            .iter()
            .any(|c| c.name == CheckName::Icmp && c.to == host && c.ok());
        if large_failed && small_ok && !asked(&out, CheckName::Pmtu, host) {
            out.push(
                PlannedCheck::run(
                    CheckName::Pmtu,
                    from,
                    host,
                    Direction::Forward,
                    Kind::Pmtu(pb::PmtuTask {
                        target: host.to_owned(),
                        max_mtu: 0,
                        timeout_us: micros(plan.options.timeout.min(PMTU_WAIT)),
                        attempts: 2,
                    }),
                )
                .noted("small packets pass, large ones do not: find the path MTU")
                .paced_by(e),
            );
        }
    }
    out
}
