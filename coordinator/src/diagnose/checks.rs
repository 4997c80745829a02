//! A check's raw task result read the way the report prints it: ok, fail
//! or skipped, counts, round trips and a one-line detail. The raw result
//! stays attached for the rules and for `-o json`. This is where the typed
//! [`Check`] is built, once, from the plan and the probe's result.

use probemesh_model::check::{CheckName, Direction, Status};
use probemesh_proto::pb;

use super::model::{Check, Observation, Rtt};
use super::plan::PlannedCheck;

const OK: Status = Status::Ok;
const FAIL: Status = Status::Fail;
const SKIPPED: Status = Status::Skipped;

/// Conntrack use above which a node counts as full.
pub const CONNTRACK_FULL: f64 = 0.95;

/// The check as reported, from its plan and (when it ran) its result.
pub fn summarize(planned: &PlannedCheck, result: Option<pb::TaskResult>) -> Check {
    let mut check = Check {
        name: planned.name,
        from: planned.from.clone(),
        to: planned.to.clone(),
        size: planned.size,
        direction: planned.direction,
        status: SKIPPED,
        sent: 0,
        received: 0,
        rtt_ms: None,
        detail: planned.note.clone(),
        observation: None,
        result: None,
    };
    let Some(result) = result else {
        return check;
    };
    let observation = Observation::try_from(&result);
    let (status, detail) = match &observation {
        Err(invalid) => (SKIPPED, invalid.to_string()),
        Ok(Observation::Ping(p)) => {
            check.sent = p.transmitted;
            check.received = p.received;
            set_rtt(&mut check, p.rtt.as_ref());
            ping_status(p)
        }
        Ok(Observation::Tcping(t)) => {
            check.sent = t.attempted;
            check.received = t.connected;
            set_rtt(&mut check, t.latency.as_ref());
            tcping_status(t)
        }
        Ok(Observation::Transfer(t)) if planned.name == CheckName::TcpConnect => {
            check.sent = 1;
            check.received = u32::from(t.connected);
            if t.connected {
                (OK, "connected (probe responder)".to_owned())
            } else {
                (FAIL, format!("{}: {}", t.outcome, t.detail))
            }
        }
        Ok(Observation::Transfer(t)) => transfer_status(t),
        Ok(Observation::Pmtu(p)) => pmtu_status(p),
        Ok(Observation::Trace(t)) => trace_status(t),
        Ok(Observation::Dns(d)) => dns_status(d, planned.answer_is_enough),
        Ok(Observation::Listener(l)) => listener_status(l, &planned.to),
        Ok(Observation::NodeFacts(f)) => facts_status(f),
    };
    check.observation = observation.ok();
    check.status = status;
    check.detail = if planned.note.is_empty() || status == SKIPPED {
        detail
    } else {
        format!("{detail} ({})", planned.note)
    };
    check.result = Some(result);
    check
}

/// The Service's NAT chain on each cluster node (`nodes`: their probes)
/// whose facts were read, whichever backend kube-proxy writes: ok when a
/// way through it leads to a DNAT, fail when nothing matches or every way
/// ends without one (a reject, a dead end). The conntrack entries of the
/// run's flows say which endpoint they got.
pub fn nat_rules(checks: &[Check], what: &str, nodes: &[&str]) -> Vec<Check> {
    checks
        .iter()
        .filter(|c| c.name == CheckName::NodeFacts && nodes.contains(&c.from.as_str()))
        .filter_map(|c| Some((c, c.facts()?)))
        .map(|(c, f)| {
            let (status, detail) = if f.nat_paths.is_empty() {
                (FAIL, format!("no NAT rule for {what} on {}", c.from))
            } else if f.nat_walk.is_empty() || f.nat_walk.iter().any(rewrites) {
                (OK, walk_detail(f))
            } else {
                (
                    FAIL,
                    format!(
                        "no NAT rule rewrites {what} on {}: {}",
                        c.from,
                        walk_detail(f)
                    ),
                )
            };
            Check {
                name: CheckName::NatRules,
                from: c.from.clone(),
                to: what.to_owned(),
                size: 0,
                direction: Direction::Local,
                status,
                sent: 0,
                received: 0,
                rtt_ms: None,
                detail,
                observation: None,
                result: None,
            }
        })
        .collect()
}

/// Whether a way through kube-proxy's rules rewrites the address.
fn rewrites(p: &pb::NatPath) -> bool {
    matches!(p.end(), pb::NatEnd::Dnat | pb::NatEnd::Redirect)
}

/// Most conntrack entries a nat_rules detail names.
const FLOWS_SHOWN: usize = 3;

/// The ways through kube-proxy's rules, each with its backend and table
/// (`nftables ip kube-proxy: services -> @service-ips -> … -> DNAT …`),
/// then the conntrack entries of the flows to the address.
fn walk_detail(f: &pb::NodeFacts) -> String {
    let mut parts: Vec<String> = if f.nat_walk.is_empty() {
        f.nat_paths.clone()
    } else {
        f.nat_walk
            .iter()
            .zip(&f.nat_paths)
            .map(|(p, rendered)| format!("{} {}: {rendered}", backend_name(p.backend()), p.table))
            .collect()
    };
    for flow in f.conntrack_flows.iter().take(FLOWS_SHOWN) {
        parts.push(format!(
            "conntrack: {} {}:{} > {}:{} answered by {}:{}{}",
            flow.protocol,
            flow.src,
            flow.sport,
            flow.dst,
            flow.dport,
            flow.reply_src,
            flow.reply_sport,
            if flow.state.is_empty() {
                String::new()
            } else {
                format!(" ({})", flow.state)
            }
        ));
    }
    parts.join("; ")
}

fn backend_name(b: pb::NatBackend) -> &'static str {
    match b {
        pb::NatBackend::Iptables => "iptables",
        pb::NatBackend::Nftables => "nftables",
        pb::NatBackend::Unspecified => "kube-proxy",
    }
}

/// Where kube-proxy dispatches Services on a node, as its facts show it:
/// `KUBE-SERVICES` (iptables mode), `table ip kube-proxy` (nftables mode),
/// or both names when neither is there (the rules are gone, so the facts
/// cannot tell which mode wrote them).
pub fn service_dispatch(f: Option<&pb::NodeFacts>) -> &'static str {
    let has = |b: pb::NatBackend| f.is_some_and(|f| f.kube_proxy_backends().any(|x| x == b));
    match (has(pb::NatBackend::Iptables), has(pb::NatBackend::Nftables)) {
        (true, false) => "KUBE-SERVICES",
        (false, true) => "table ip kube-proxy",
        (true, true) => "KUBE-SERVICES and table ip kube-proxy",
        (false, false) => "KUBE-SERVICES or table ip kube-proxy",
    }
}

fn set_rtt(check: &mut Check, rtt: Option<&pb::RttStats>) {
    if check.received == 0 {
        return;
    }
    check.rtt_ms = rtt.map(|r| Rtt {
        min: ms(r.min_ns),
        avg: ms(r.avg_ns),
        max: ms(r.max_ns),
    });
}

fn ms(ns: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let ms = ns as f64 / 1e6;
    (ms * 1000.0).round() / 1000.0
}

fn ping_status(p: &pb::PingSummary) -> (Status, String) {
    let lost = p.transmitted.saturating_sub(p.received);
    let df = if p.dont_fragment { ", DF" } else { "" };
    match (p.received, lost) {
        (_, 0) if p.transmitted > 0 => (
            OK,
            format!(
                "{} of {} replies, {} bytes{df}",
                p.received, p.transmitted, p.size
            ),
        ),
        (0, _) if p.errors > 0 => (
            FAIL,
            format!(
                "no replies; {} errors instead: {} ({} bytes{df})",
                p.errors,
                ping_errors(p),
                p.size
            ),
        ),
        (0, _) => (
            FAIL,
            format!(
                "no replies to {} echoes ({} bytes{df})",
                p.transmitted, p.size
            ),
        ),
        _ => (
            FAIL,
            format!(
                "{lost} of {} lost ({:.0} %), {} bytes{df}",
                p.transmitted,
                f64::from(lost) * 100.0 / f64::from(p.transmitted.max(1)),
                p.size
            ),
        ),
    }
}

/// The errors that answered echoes or refused them, as one phrase:
/// `20 Destination Host Unreachable from 198.18.100.1`, `3 refused locally
/// (EHOSTUNREACH: ...)`; the bare count for older probes that do not
/// itemize them.
fn ping_errors(p: &pb::PingSummary) -> String {
    let mut parts: Vec<String> = p
        .icmp_errors
        .iter()
        .map(|e| format!("{} {} from {}", e.count, e.detail, e.from))
        .collect();
    parts.extend(
        p.local_errors
            .iter()
            .map(|e| format!("{} refused locally ({}: {})", e.count, e.errno, e.detail)),
    );
    if parts.is_empty() {
        format!("{} not itemized", p.errors)
    } else {
        parts.join(", ")
    }
}

fn tcping_status(t: &pb::TcpingSummary) -> (Status, String) {
    if t.attempted > 0 && t.connected == t.attempted {
        return (OK, format!("{} of {} connected", t.connected, t.attempted));
    }
    let mut why = Vec::new();
    if t.refused > 0 {
        why.push(format!("{} refused (RST)", t.refused));
    }
    if t.timed_out > 0 {
        why.push(format!("{} timed out (no answer)", t.timed_out));
    }
    if t.failed > 0 {
        why.push(format!("{} failed", t.failed));
    }
    (
        FAIL,
        format!(
            "{} of {} connected; {}",
            t.connected,
            t.attempted,
            why.join(", ")
        ),
    )
}

fn transfer_status(t: &pb::TcpTransferResult) -> (Status, String) {
    if t.completed {
        return (
            OK,
            format!(
                "{} bytes acknowledged, mss {}, {} retransmits",
                t.bytes_acked, t.mss, t.retransmits
            ),
        );
    }
    if t.connected {
        return (
            FAIL,
            format!(
                "handshake fine, then stalled: {} of {} bytes acknowledged, {} retransmits, mss {}",
                t.bytes_acked, t.bytes_sent, t.retransmits, t.mss
            ),
        );
    }
    (FAIL, format!("{}: {}", t.outcome, t.detail))
}

fn pmtu_status(p: &pb::PmtuResult) -> (Status, String) {
    if p.blackhole || (p.path_mtu > 0 && p.path_mtu < p.interface_mtu) {
        let how = if p.blackhole {
            "larger packets vanish, no frag-needed came back (black hole)".to_owned()
        } else {
            format!(
                "frag-needed from {} says {}",
                p.frag_needed_from, p.frag_needed_mtu
            )
        };
        return (
            FAIL,
            format!(
                "path MTU {} < {} MTU {}: {how}",
                p.path_mtu, p.interface, p.interface_mtu
            ),
        );
    }
    (OK, format!("path MTU {} = {} MTU", p.path_mtu, p.interface))
}

fn trace_status(t: &pb::TraceResult) -> (Status, String) {
    let hops: Vec<&str> = t.hops.iter().map(|h| h.host.as_str()).collect();
    let path = if hops.is_empty() {
        "no hop answered".to_owned()
    } else {
        hops.join(" → ")
    };
    if t.reached && t.loss_from_hop == 0 {
        return (OK, format!("reached in {} hops: {path}", hops.len()));
    }
    let reading = t.reading.join("; ");
    if t.reached {
        (
            FAIL,
            format!("loss from hop {}: {path}; {reading}", t.loss_from_hop),
        )
    } else {
        (FAIL, format!("not reached: {path}; {reading}"))
    }
}

/// Answers asked through resolv.conf.
pub fn resolv_conf_answers(d: &pb::DnsResult) -> impl Iterator<Item = &pb::DnsAnswer> {
    d.answers.iter().filter(|a| a.source == "resolv.conf")
}

fn dns_status(d: &pb::DnsResult, answer_is_enough: bool) -> (Status, String) {
    let resolved = resolv_conf_answers(d)
        .find(|a| a.rcode == "NOERROR" && !a.answers.is_empty())
        .or_else(|| {
            d.answers
                .iter()
                .find(|a| a.rcode == "NOERROR" && !a.answers.is_empty())
                .filter(|_| resolv_conf_answers(d).next().is_none())
        });
    let each: Vec<String> = d
        .answers
        .iter()
        .map(|a| format!("{} {}", a.server, a.rcode))
        .collect();
    let mut detail = each.join(", ");
    if !d.conclusion.is_empty() {
        detail = format!("{detail}: {}", d.conclusion);
    }
    let answered = d
        .answers
        .iter()
        .find(|a| !matches!(a.rcode.as_str(), "TIMEOUT" | "ERROR" | ""));
    match (resolved, answered) {
        (Some(a), _) => (
            OK,
            format!(
                "{} → {} via {}; {detail}",
                d.name,
                a.answers.join(" "),
                a.server
            ),
        ),
        (None, Some(a)) if answer_is_enough => (OK, format!("{} answers; {detail}", a.server)),
        _ => (FAIL, format!("{} does not resolve; {detail}", d.name)),
    }
}

/// Whether a listener's address accepts connections from other hosts.
pub fn listens_everywhere(l: &pb::Listener) -> bool {
    !is_loopback(&l.address)
}

/// `127.0.0.0/8` or `::1`.
pub fn is_loopback(address: &str) -> bool {
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn listener_status(l: &pb::ListenerResult, to: &str) -> (Status, String) {
    let tcp: Vec<&pb::Listener> = l
        .listeners
        .iter()
        .filter(|x| x.protocol.starts_with("tcp"))
        .collect();
    let shown: Vec<String> = tcp
        .iter()
        .map(|x| {
            let who = if x.process.is_empty() {
                String::new()
            } else {
                format!(" ({} pid {})", x.process, x.pid)
            };
            format!("{}:{}{who}", x.address, x.port)
        })
        .collect();
    if tcp.iter().any(|x| listens_everywhere(x)) {
        (OK, format!("listening on {}", shown.join(", ")))
    } else if tcp.is_empty() {
        (FAIL, format!("nothing listens on TCP {to}"))
    } else {
        (
            FAIL,
            format!(
                "listening on loopback only: {} (other hosts are refused)",
                shown.join(", ")
            ),
        )
    }
}

/// Conntrack use as a fraction, when known.
pub fn conntrack_use(f: &pb::NodeFacts) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (f.conntrack_max > 0).then(|| f.conntrack_count as f64 / f.conntrack_max as f64)
}

fn facts_status(f: &pb::NodeFacts) -> (Status, String) {
    let conntrack = format!("conntrack {}/{}", f.conntrack_count, f.conntrack_max);
    let tunnels: Vec<String> = f
        .tunnels
        .iter()
        .map(|t| format!("{} {} local {} mtu {}", t.device, t.kind, t.local, t.mtu))
        .collect();
    let mtus: Vec<String> = f
        .interfaces
        .iter()
        .filter(|i| i.name != "lo")
        .map(|i| format!("{} mtu {} {}", i.name, i.mtu, i.addresses.join(" ")))
        .collect();
    let detail = format!(
        "{conntrack}; {}{}{}",
        mtus.join("; "),
        if tunnels.is_empty() { "" } else { "; " },
        tunnels.join("; ")
    );
    if conntrack_use(f).is_some_and(|u| u >= CONNTRACK_FULL) {
        (FAIL, format!("conntrack table full: {detail}"))
    } else {
        (OK, detail)
    }
}

#[cfg(test)]
mod tests {
    use probemesh_proto::pb::task_result::Outcome;

    use super::*;

    fn planned(name: CheckName) -> PlannedCheck {
        PlannedCheck::example(name, "cloudvm-1", "198.18.0.12", Direction::Forward)
    }

    fn ping(transmitted: u32, received: u32) -> pb::TaskResult {
        pb::TaskResult {
            outcome: Some(Outcome::Ping(pb::PingSummary {
                transmitted,
                received,
                size: 56,
                rtt: Some(pb::RttStats {
                    min_ns: 20_000,
                    avg_ns: 30_000,
                    max_ns: 40_000,
                    mdev_ns: 1,
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn ping_counts_and_round_trips() {
        let ok = summarize(&planned(CheckName::Icmp), Some(ping(20, 20)));
        assert_eq!((ok.status, ok.sent, ok.received), (OK, 20, 20));
        assert!((ok.to_pb().rtt_avg_ms - 0.03).abs() < 1e-9);
        let lossy = summarize(&planned(CheckName::Icmp), Some(ping(20, 16)));
        assert_eq!(lossy.status, FAIL);
        assert!(
            lossy.detail.contains("4 of 20 lost (20 %)"),
            "{}",
            lossy.detail
        );
        let dead = summarize(&planned(CheckName::Icmp), Some(ping(20, 0)));
        assert_eq!((dead.status, dead.to_pb().rtt_avg_ms), (FAIL, 0.0));
    }

    #[test]
    fn skipped_and_failed_tasks_say_why() {
        let skipped = summarize(
            &PlannedCheck {
                note: "no port given".into(),
                ..planned(CheckName::TcpConnect)
            },
            None,
        );
        assert_eq!(
            (skipped.status, skipped.detail.as_str()),
            (SKIPPED, "no port given")
        );
        let error = summarize(
            &planned(CheckName::Icmp),
            Some(crate::execute::task_error(
                pb::task_error::Kind::ProbeFailure,
                "probe 'node-2' is not connected".into(),
            )),
        );
        assert_eq!(error.status, SKIPPED);
        assert!(error.detail.contains("not connected"));
    }

    #[test]
    fn listeners_on_loopback_only_fail() {
        let result = |addr: &str| pb::TaskResult {
            outcome: Some(Outcome::Listener(pb::ListenerResult {
                listeners: vec![pb::Listener {
                    protocol: "tcp".into(),
                    address: addr.into(),
                    port: 8080,
                    ..Default::default()
                }],
            })),
            ..Default::default()
        };
        let p = planned(CheckName::Listener);
        assert_eq!(summarize(&p, Some(result("0.0.0.0"))).status, OK);
        let lo = summarize(&p, Some(result("127.0.0.1")));
        assert!(
            lo.status == FAIL && lo.detail.contains("loopback only"),
            "{}",
            lo.detail
        );
        let none = summarize(
            &p,
            Some(pb::TaskResult {
                outcome: Some(Outcome::Listener(pb::ListenerResult::default())),
                ..Default::default()
            }),
        );
        assert!(none.detail.contains("nothing listens"));
    }

    #[test]
    fn full_conntrack_and_missing_nat_rules_fail() {
        let facts = |count, paths: &[&str]| {
            summarize(
                &PlannedCheck::example(CheckName::NodeFacts, "node-2", "", Direction::Local),
                Some(pb::TaskResult {
                    outcome: Some(Outcome::NodeFacts(pb::NodeFacts {
                        conntrack_count: count,
                        conntrack_max: 1000,
                        nat_paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            )
        };
        let full = summarize(&planned(CheckName::NodeFacts), facts(1000, &[]).result);
        assert_eq!(full.status, FAIL);
        let nat = nat_rules(
            &[facts(10, &[]), facts(10, &["KUBE-SERVICES -> DNAT"])],
            "198.18.200.80:80",
            &["node-2"],
        );
        assert_eq!(nat.iter().map(|c| c.status).collect::<Vec<_>>(), [FAIL, OK]);
        assert!(
            nat[0]
                .detail
                .contains("no NAT rule for 198.18.200.80:80 on node-2")
        );
    }

    #[test]
    fn the_nat_walk_names_its_backend_and_the_flows_their_endpoint() {
        let facts = |end: pb::NatEnd, rendered: &str| {
            summarize(
                &PlannedCheck::example(CheckName::NodeFacts, "node-1", "", Direction::Local),
                Some(pb::TaskResult {
                    outcome: Some(Outcome::NodeFacts(pb::NodeFacts {
                        nat_paths: vec![rendered.to_owned()],
                        nat_walk: vec![pb::NatPath {
                            backend: pb::NatBackend::Nftables.into(),
                            table: "ip kube-proxy".into(),
                            end: end.into(),
                            ..Default::default()
                        }],
                        kube_proxy_backends: vec![pb::NatBackend::Nftables.into()],
                        conntrack_flows: vec![pb::ConntrackFlow {
                            protocol: "tcp".into(),
                            state: "TIME_WAIT".into(),
                            src: "198.18.0.11".into(),
                            sport: 41000,
                            dst: "198.18.200.80".into(),
                            dport: 80,
                            reply_src: "198.19.2.10".into(),
                            reply_sport: 8080,
                            assured: true,
                            unreplied: false,
                        }],
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            )
        };
        let nat = nat_rules(
            &[
                facts(
                    pb::NatEnd::Dnat,
                    "services -> @service-ips -> DNAT 198.19.2.10:8080",
                ),
                facts(pb::NatEnd::Reject, "cluster-ips-check -> REJECT"),
            ],
            "198.18.200.80:80",
            &["node-1"],
        );
        assert_eq!(nat.iter().map(|c| c.status).collect::<Vec<_>>(), [OK, FAIL]);
        assert_eq!(
            nat[0].detail,
            "nftables ip kube-proxy: services -> @service-ips -> DNAT 198.19.2.10:8080; conntrack: tcp 198.18.0.11:41000 > 198.18.200.80:80 answered by 198.19.2.10:8080 (TIME_WAIT)"
        );
        assert!(
            nat[1]
                .detail
                .starts_with("no NAT rule rewrites 198.18.200.80:80 on node-1: nftables"),
            "{}",
            nat[1].detail
        );
        let with = |backends: &[pb::NatBackend]| pb::NodeFacts {
            kube_proxy_backends: backends.iter().map(|b| (*b).into()).collect(),
            ..Default::default()
        };
        assert_eq!(
            service_dispatch(Some(&with(&[pb::NatBackend::Nftables]))),
            "table ip kube-proxy"
        );
        assert_eq!(
            service_dispatch(Some(&with(&[pb::NatBackend::Iptables]))),
            "KUBE-SERVICES"
        );
        assert_eq!(
            service_dispatch(None),
            "KUBE-SERVICES or table ip kube-proxy"
        );
    }
}
