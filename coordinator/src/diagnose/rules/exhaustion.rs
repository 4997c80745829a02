//! Ports and queues run out (`port_unreachable`): the source has no free
//! ephemeral port to connect from (`port_exhaustion`), or the destination's
//! accept queue is full, so its kernel drops new SYNs (`backlog_overflow`).
//! Both are read from counters the probes report as they are at the run,
//! not from the failures alone: a timeout says nothing about queues.

use probemesh_model::check::CheckName;
use probemesh_model::evidence::Claim;
use probemesh_model::path::{Action, Resource, ResourceKind};
use probemesh_proto::pb;

use super::{Evidence, Finding, cite};
use crate::diagnose::model::Check;
use crate::diagnose::path::Blocking;

/// Share of the ephemeral range in use from which new connections fail.
const PORTS_EXHAUSTED: f64 = 0.95;

/// A failing TCP check from the source (none connected).
fn failing_tcp<'a>(e: &Evidence<'a>) -> Option<&'a Check> {
    e.ran(CheckName::TcpConnect)
        .find(|c| c.from == e.source.spec && c.failed() && c.received == 0)
}

pub(super) fn port_exhaustion(e: &Evidence<'_>) -> Option<Finding> {
    let failed = failing_tcp(e)?;
    let (fc, f) = e.facts(&e.source.probe)?;
    let range = f.ephemeral_port_high.checked_sub(f.ephemeral_port_low)? + 1;
    if f64::from(f.ephemeral_ports_in_use) < f64::from(range) * PORTS_EXHAUSTED {
        return None;
    }
    let evidence = vec![
        cite(failed, &failed.detail),
        cite(
            fc,
            &format!(
                "{} of {range} ephemeral ports in use ({}-{})",
                f.ephemeral_ports_in_use, f.ephemeral_port_low, f.ephemeral_port_high
            ),
        ),
    ];
    Some(Finding {
        claims: vec![
            Claim::new(format!("{}'s connections fail", e.source.spec), &[0]),
            Claim::new(
                format!(
                    "{} has used {} of its {range} ephemeral ports: new connections have no source port to leave from",
                    fc.from, f.ephemeral_ports_in_use
                ),
                &[1],
            ),
        ],
        fix: format!(
            "on {}: find who holds the ports (ss -tan state time-wait | wc -l; ss -tanp | sort by process), reuse connections (keep-alive, pooling), widen net.ipv4.ip_local_port_range, or spread the traffic over more source addresses",
            fc.from
        ),
        evidence,
        confidence: 0.85,
        blocking: Some(Blocking::new(
            &fc.from,
            Action::Rejected,
            Resource::new(
                ResourceKind::PortRange,
                format!(
                    "{}: ip_local_port_range {}-{} ({} in use)",
                    fc.from, f.ephemeral_port_low, f.ephemeral_port_high, f.ephemeral_ports_in_use
                ),
            ),
            &[1],
        )),
    })
}

/// A TCP listener with connections the app has not accepted. While SYNs
/// to it go unanswered, that queue is at its limit: with room left the
/// kernel would answer them. (`/proc/net/tcp` shows the queue, not the
/// backlog, so the limit itself is not known.)
fn stuck_queue(l: &pb::ListenerResult) -> Option<&pb::Listener> {
    l.listeners
        .iter()
        .find(|s| s.protocol.starts_with("tcp") && s.recv_queue > 0)
}

pub(super) fn backlog_overflow(e: &Evidence<'_>) -> Option<Finding> {
    let failed = failing_tcp(e)?;
    let (lc, l) = e
        .ran(CheckName::Listener)
        .find_map(|c| Some((c, stuck_queue(c.listeners()?)?)))?;
    let mut evidence = vec![
        cite(failed, &failed.detail),
        cite(
            lc,
            &format!(
                "{}:{} has {} connections waiting to be accepted",
                l.address, l.port, l.recv_queue
            ),
        ),
    ];
    let mut full = vec![1];
    let node = lc.from.split_once('@').map_or(lc.from.as_str(), |(n, _)| n);
    if let Some((fc, f)) = e.facts(node).filter(|(_, f)| f.listen_overflows > 0) {
        full.push(evidence.len());
        evidence.push(cite(
            fc,
            &format!(
                "{} accept-queue overflows and {} dropped SYNs counted on {}",
                f.listen_overflows, f.listen_drops, fc.from
            ),
        ));
    }
    Some(Finding {
        claims: vec![
            Claim::new(format!("connections to port {} time out", l.port), &[0]),
            Claim::new(
                format!(
                    "the app in {} leaves {} connections unaccepted: its accept queue is full, so the kernel drops new SYNs",
                    lc.place(),
                    l.recv_queue
                ),
                &full,
            ),
        ],
        fix: format!(
            "the app in {} is not calling accept() fast enough: look at its threads and event loop (is it stuck or overloaded?); raise its listen backlog and net.core.somaxconn if bursts are expected",
            lc.place()
        ),
        evidence,
        confidence: 0.85,
        blocking: Some(Blocking::new(
            lc.place(),
            Action::Dropped,
            Resource::new(
                ResourceKind::Listener,
                format!(
                    "{}: {}:{} accept queue ({} waiting)",
                    lc.place(),
                    l.address,
                    l.port,
                    l.recv_queue
                ),
            ),
            &full,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::fixtures::*;

    fn queue(recv: u32) -> Check {
        listening(
            "node-2@pod:default/web-0",
            8080,
            vec![socket("0.0.0.0", 8080, recv)],
        )
    }

    #[tokio::test]
    async fn a_stuck_accept_queue_is_backlog_overflow_and_an_empty_one_is_not() {
        let case = |recv| {
            Case::new("node-1", "svc:default/web:80")
                .with(icmp("node-1", "198.19.2.10", 20, 20))
                .with(tcp("node-1", "198.18.200.80:80", 0, 0, 3))
                .with(queue(recv))
                .verdict()
        };
        let full = case(2);
        assert_eq!(
            class(&full),
            ("port_unreachable", "backlog_overflow"),
            "{full:#?}"
        );
        assert!(
            full.summary.contains("leaves 2 connections unaccepted"),
            "{}",
            full.summary
        );
        // An empty queue is not the reason: the timeouts are filtered.
        let empty = case(0);
        assert_eq!(
            class(&empty),
            ("port_unreachable", "filtered"),
            "{empty:#?}"
        );
    }

    #[tokio::test]
    async fn a_source_out_of_ephemeral_ports_is_port_exhaustion() {
        let case = |in_use| {
            Case::new("node-1", "svc:default/web:80")
                .with(icmp("node-1", "198.19.2.10", 20, 20))
                .with(tcp("node-1", "198.18.200.80:80", 0, 0, 3))
                .with(facts(
                    "node-1",
                    pb::NodeFacts {
                        ephemeral_port_low: 40000,
                        ephemeral_port_high: 40009,
                        ephemeral_ports_in_use: in_use,
                        nat_paths: vec![
                            "KUBE-SERVICES -> KUBE-SVC-WEB -> KUBE-SEP-WEB0 -> DNAT 198.19.2.10:8080"
                                .into(),
                        ],
                        ..Default::default()
                    },
                ))
                .verdict()
        };
        let out = case(10);
        assert_eq!(
            class(&out),
            ("port_unreachable", "port_exhaustion"),
            "{out:#?}"
        );
        assert!(
            out.summary.contains("10 of its 10 ephemeral ports"),
            "{}",
            out.summary
        );
        let spare = case(5);
        assert_ne!(class(&spare).1, "port_exhaustion", "{spare:#?}");
    }
}
