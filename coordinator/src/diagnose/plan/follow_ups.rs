//! The second wave, decided from the first wave's results: the path where
//! something failed or lost packets, the path MTU where large packets failed
//! while small ones passed.

use super::*;
use crate::diagnose::model::Check;

/// The second wave, decided from the first: the path where reachability
/// failed or lost packets, the path MTU where large packets or a transfer
/// failed while small ones passed.
pub fn follow_ups(plan: &DiagnosisPlan, done: &[Check]) -> Vec<PlannedCheck> {
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
    let timeout_us = micros(plan.options.timeout);
    let mut out = Vec::new();
    let mut traced = BTreeSet::new();
    for e in &plan.target.endpoints {
        // A ClusterIP exists only in NAT rules: no hop of a trace leads to it.
        if reachable_from(&plan.source, e).is_err() || e.ip().is_none() || e.role == Role::ClusterIp
        {
            continue;
        }
        let host = e.host.as_str();
        let unreachable = failed(CheckName::Icmp, host) || failed(CheckName::TcpConnect, host);
        if (unreachable || lossy(host)) && traced.len() < 2 && traced.insert(host.to_owned()) {
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
                        timeout_us: micros(plan.options.timeout.min(Duration::from_millis(500))),
                    }),
                )
                .noted("something failed or lost packets: where does it stop?"),
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
        if large_failed && small_ok {
            out.push(
                PlannedCheck::run(
                    CheckName::Pmtu,
                    from,
                    host,
                    Direction::Forward,
                    Kind::Pmtu(pb::PmtuTask {
                        target: host.to_owned(),
                        max_mtu: 0,
                        timeout_us: timeout_us.min(micros(Duration::from_millis(300))),
                        attempts: 2,
                    }),
                )
                .noted("small packets pass, large ones do not: find the path MTU"),
            );
        }
    }
    out
}
