//! Rule by rule: the evidence each fault leaves, built from task results
//! like the probes send, and the verdict it must give; plus the near
//! misses each rule must not take.

use std::net::Ipv4Addr;

use probemesh_model::inventory::{Inventory, PodPhase};
use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;

use super::*;
use crate::diagnose::checks::summarize;
use crate::diagnose::packets::{Fate, Packets, Proto, Tunnel};
use crate::diagnose::plan::{Direction, PlannedCheck, SourceSide};
use crate::diagnose::target::{self, Resolved};
use crate::diagnose::testing::lab_inventory;

struct Case {
    source: SourceSide,
    target: Resolved,
    checks: Vec<pb::Check>,
    packets: Option<Packets>,
    inventory: Inventory,
}

impl Case {
    fn new(from: &str, to: &str) -> Self {
        let reg = crate::registry::attached(&["node-1", "node-2", "node-3", "cloudvm-1"]);
        let inventory = lab_inventory();
        Self {
            source: SourceSide::resolve(from, &reg, Some(&inventory)).unwrap(),
            target: target::resolve(to, &reg, Some(&inventory)).unwrap(),
            checks: Vec::new(),
            packets: None,
            inventory,
        }
    }

    fn with(mut self, check: pb::Check) -> Self {
        self.checks.push(check);
        self
    }

    fn verdict(&self) -> pb::Verdict {
        diagnose(&Evidence {
            source: &self.source,
            target: &self.target,
            checks: &self.checks,
            packets: self.packets.as_ref(),
            inventory: Some(&self.inventory),
            missing: &[],
        })
    }
}

fn run(name: CheckName, from: &str, to: &str, direction: Direction, outcome: Outcome) -> pb::Check {
    let planned = PlannedCheck {
        answer_is_enough: name == CheckName::Dns && from == "node-3",
        ..PlannedCheck::example(name, from, to, direction)
    };
    summarize(
        &planned,
        Some(pb::TaskResult {
            outcome: Some(outcome),
            ..Default::default()
        }),
    )
}

fn icmp(from: &str, to: &str, sent: u32, received: u32) -> pb::Check {
    icmp_sized(CheckName::Icmp, from, to, sent, received, 0)
}

fn icmp_sized(
    name: CheckName,
    from: &str,
    to: &str,
    sent: u32,
    received: u32,
    errors: u32,
) -> pb::Check {
    run(
        name,
        from,
        to,
        Direction::Forward,
        Outcome::Ping(pb::PingSummary {
            transmitted: sent,
            received,
            errors,
            size: if name == CheckName::IcmpLarge {
                1472
            } else {
                56
            },
            dont_fragment: name == CheckName::IcmpLarge,
            rtt: Some(pb::RttStats {
                min_ns: 30_000,
                avg_ns: 40_000,
                max_ns: 50_000,
                mdev_ns: 5_000,
            }),
            ..Default::default()
        }),
    )
}

fn reverse(from: &str, to: &str, sent: u32, received: u32) -> pb::Check {
    pb::Check {
        direction: "reverse".into(),
        ..icmp(from, to, sent, received)
    }
}

fn tcp(from: &str, to: &str, connected: u32, refused: u32, timed_out: u32) -> pb::Check {
    let (host, port) = to.split_once(':').unwrap();
    run(
        CheckName::TcpConnect,
        from,
        to,
        Direction::Forward,
        Outcome::Tcping(pb::TcpingSummary {
            host: host.into(),
            port: port.parse().unwrap(),
            attempted: connected + refused + timed_out,
            connected,
            refused,
            timed_out,
            ..Default::default()
        }),
    )
}

fn transfer(from: &str, to: &str, connected: bool, completed: bool) -> pb::Check {
    run(
        CheckName::TcpTransfer,
        from,
        to,
        Direction::Forward,
        Outcome::TcpTransfer(pb::TcpTransferResult {
            connected,
            completed,
            bytes_sent: 65_536,
            bytes_acked: if completed { 65_536 } else { 1 },
            mss: 1448,
            retransmits: if completed { 0 } else { 6 },
            outcome: if connected { "connected" } else { "timeout" }.into(),
            ..Default::default()
        }),
    )
}

fn pmtu(from: &str, to: &str, path: u32, blackhole: bool) -> pb::Check {
    run(
        CheckName::Pmtu,
        from,
        to,
        Direction::Forward,
        Outcome::Pmtu(pb::PmtuResult {
            target: to.into(),
            interface: "eth0".into(),
            interface_mtu: 1500,
            path_mtu: path,
            blackhole,
            ..Default::default()
        }),
    )
}

fn listener(from: &str, address: &str) -> pb::Check {
    let listeners = if address.is_empty() {
        Vec::new()
    } else {
        vec![pb::Listener {
            protocol: "tcp".into(),
            address: address.into(),
            port: 8080,
            process: "web".into(),
            ..Default::default()
        }]
    };
    run(
        CheckName::Listener,
        from,
        ":8080",
        Direction::Local,
        Outcome::Listener(pb::ListenerResult { listeners }),
    )
}

fn facts(from: &str, f: pb::NodeFacts) -> pb::Check {
    run(
        CheckName::NodeFacts,
        from,
        "",
        Direction::Local,
        Outcome::NodeFacts(f),
    )
}

fn answer(server: &str, source: &str, rcode: &str, answers: &[&str]) -> pb::DnsAnswer {
    pb::DnsAnswer {
        server: server.into(),
        source: source.into(),
        rcode: rcode.into(),
        answers: answers.iter().map(|a| (*a).to_owned()).collect(),
        ..Default::default()
    }
}

/// A dig result as the probe sends it: each server asked once, tagged
/// `resolv.conf` when the namespace's resolv.conf names it.
fn dns(from: &str, resolv_conf: &str, answers: Vec<pb::DnsAnswer>) -> pb::Check {
    run(
        CheckName::Dns,
        from,
        "web.default.svc.cluster.local",
        Direction::Forward,
        Outcome::Dns(pb::DnsResult {
            name: "web.default.svc.cluster.local".into(),
            answers,
            resolv_conf_servers: vec![resolv_conf.into()],
            ..Default::default()
        }),
    )
}

const CLIENT: &str = "node-3@pod:default/client-3";
const NAME: &str = "dns:web.default.svc.cluster.local";

fn upstream(ok: bool) -> pb::Check {
    dns(
        "node-3",
        "198.18.0.1",
        vec![answer(
            "198.18.0.1:53",
            "resolv.conf",
            if ok { "NXDOMAIN" } else { "TIMEOUT" },
            &[],
        )],
    )
}

fn class(v: &pb::Verdict) -> (&str, &str) {
    (v.class.as_str(), v.cause.as_str())
}

#[test]
fn every_rule_names_a_design_class_and_what_it_needs() {
    for r in RULES {
        assert!(
            probemesh_model::verdict::is_known(r.class, r.cause),
            "{}: {}/{}",
            r.name,
            r.class,
            r.cause
        );
        assert!(!r.needs.is_empty(), "{}", r.name);
    }
}

#[tokio::test]
async fn a_healthy_path_is_ok() {
    let v = Case::new("cloudvm-1", "nodeport:node-2:30080")
        .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
        .with(tcp("cloudvm-1", "198.18.0.12:30080", 3, 0, 0))
        .with(transfer("cloudvm-1", "198.18.0.12:30080", true, true))
        .with(reverse("node-2", "198.18.0.14", 20, 20))
        .verdict();
    assert_eq!(class(&v), ("ok", ""), "{v:?}");
    assert!(v.summary.contains("every check passed"));
}

#[tokio::test]
async fn nothing_from_the_source_is_inconclusive() {
    let mut c = Case::new("cloudvm-1", "probe:node-2");
    c.checks.push(summarize(
        &PlannedCheck::example(
            CheckName::Icmp,
            "cloudvm-1",
            "198.18.0.12",
            Direction::Forward,
        ),
        Some(crate::execute::task_error(
            pb::task_error::Kind::ProbeFailure,
            "probe 'cloudvm-1' is not connected".into(),
        )),
    ));
    let v = c.verdict();
    assert_eq!(v.class, "inconclusive");
    assert!(v.missing.iter().any(|m| m.contains("cloudvm-1")), "{v:?}");
}

#[tokio::test]
async fn icmp_dropped_while_tcp_connects_is_a_firewall() {
    let v = Case::new("cloudvm-1", "probe:node-2")
        .with(icmp("cloudvm-1", "198.18.0.12", 20, 0))
        .with(run(
            CheckName::TcpConnect,
            "cloudvm-1",
            "198.18.0.12 (responder of probe:node-2)",
            Direction::Forward,
            Outcome::TcpTransfer(pb::TcpTransferResult {
                connected: true,
                completed: true,
                ..Default::default()
            }),
        ))
        .with(reverse("node-2", "198.18.0.14", 20, 20))
        .verdict();
    assert_eq!(class(&v), ("network_unreachable", "firewall"), "{v:?}");
    assert!(
        v.evidence
            .iter()
            .any(|e| e.observation.contains("TCP to the same host works"))
    );
    assert!(
        v.evidence
            .iter()
            .any(|e| e.observation.contains("the other way works"))
    );
}

#[tokio::test]
async fn a_missing_overlay_route_is_routing() {
    let routes = vec![
        pb::Route {
            destination: "default".into(),
            gateway: "198.18.0.1".into(),
            device: "eth0".into(),
            raw: "default via 198.18.0.1 dev eth0".into(),
            ..Default::default()
        },
        pb::Route {
            destination: "198.19.1.0/24".into(),
            device: "flannel.1".into(),
            raw: "198.19.1.0/24 via 198.19.1.0 dev flannel.1 onlink".into(),
            ..Default::default()
        },
    ];
    let base = Case::new("node-3", "pod:default/web-0:8080")
        .with(icmp("node-3", "198.19.2.10", 20, 0))
        .with(tcp("node-3", "198.19.2.10:8080", 0, 0, 3))
        .with(pb::Check {
            detail: "node to node".into(),
            ..icmp("node-3", "198.18.0.12", 20, 20)
        });
    let v = base
        .with(facts(
            "node-3",
            pb::NodeFacts {
                routes: routes.clone(),
                ..Default::default()
            },
        ))
        .verdict();
    assert_eq!(class(&v), ("network_unreachable", "routing"), "{v:?}");
    assert!(v.summary.contains("198.19.2.0/24"), "{}", v.summary);
    // With the route present the rule stays silent.
    let mut with_route = routes;
    with_route.push(pb::Route {
        destination: "198.19.2.0/24".into(),
        device: "flannel.1".into(),
        ..Default::default()
    });
    let v = Case::new("node-3", "pod:default/web-0:8080")
        .with(icmp("node-3", "198.19.2.10", 20, 0))
        .with(facts(
            "node-3",
            pb::NodeFacts {
                routes: with_route,
                ..Default::default()
            },
        ))
        .verdict();
    assert_ne!(v.cause, "routing", "{v:?}");
}

#[tokio::test]
async fn a_stopped_app_is_refused_and_a_loopback_one_is_loopback_only() {
    let case = |addr: &str| {
        Case::new("node-1", "svc:default/web:80")
            .with(icmp("node-1", "198.19.2.10", 20, 20))
            .with(tcp("node-1", "198.18.200.80:80", 0, 3, 0))
            .with(tcp("node-1", "198.19.2.10:8080", 0, 3, 0))
            .with(listener("node-2@pod:default/web-0", addr))
            .verdict()
    };
    let down = case("");
    assert_eq!(class(&down), ("port_unreachable", "refused"), "{down:?}");
    assert!(down.summary.contains("8080"), "{}", down.summary);
    let lo = case("127.0.0.1");
    assert_eq!(class(&lo), ("port_unreachable", "loopback_only"), "{lo:?}");
    assert!(lo.summary.contains("127.0.0.1:8080"), "{}", lo.summary);
}

#[tokio::test]
async fn syns_dropped_at_a_live_host_are_filtered() {
    let mut c = Case::new("cloudvm-1", "nodeport:node-2:30080")
        .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
        .with(tcp("cloudvm-1", "198.18.0.12:30080", 0, 0, 3))
        .with(transfer("cloudvm-1", "198.18.0.12:30080", false, false))
        .with(listener("node-2@pod:default/web-0", "0.0.0.0"));
    c.packets = Some(Packets {
        fates: vec![Fate {
            proto: Proto::Tcp,
            src: Ipv4Addr::new(198, 18, 100, 10),
            dst: Ipv4Addr::new(198, 18, 0, 12),
            dst_port: 30080,
            syn: true,
            wire_bytes: 74,
            seen_at: vec!["cloudvm-1/eth0".into(), "node-2/eth0".into()],
            answered: false,
            lost_after: Some("node-2/eth0".into()),
            retransmissions: 2,
        }],
        ..Default::default()
    });
    let v = c.verdict();
    assert_eq!(class(&v), ("port_unreachable", "filtered"), "{v:?}");
    assert!(v.summary.contains("on node-2"), "{}", v.summary);
    assert!(
        v.evidence
            .iter()
            .any(|e| e.artifact == "capture node-2/eth0")
    );
}

#[tokio::test]
async fn large_packets_lost_silently_with_a_small_path_mtu_are_a_black_hole() {
    let case = || {
        Case::new("cloudvm-1", "nodeport:30080")
            .with(icmp("cloudvm-1", "198.18.0.11", 20, 20))
            .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
            .with(icmp_sized(
                CheckName::IcmpLarge,
                "cloudvm-1",
                "198.18.0.11",
                5,
                5,
                0,
            ))
            .with(icmp_sized(
                CheckName::IcmpLarge,
                "cloudvm-1",
                "198.18.0.12",
                5,
                0,
                0,
            ))
            .with(tcp("cloudvm-1", "198.18.0.12:30080", 3, 0, 0))
            .with(transfer("cloudvm-1", "198.18.0.12:30080", true, false))
            .with(facts(
                "node-2",
                pb::NodeFacts {
                    interfaces: vec![pb::Interface {
                        name: "eth0".into(),
                        mtu: 1440,
                        addresses: vec!["198.18.0.12/24".into()],
                        up: true,
                    }],
                    ..Default::default()
                },
            ))
    };
    let v = case()
        .with(pmtu("cloudvm-1", "198.18.0.12", 1440, true))
        .verdict();
    assert_eq!(class(&v), ("mtu_blackhole", ""), "{v:?}");
    assert!(
        v.summary.contains("1440") && v.summary.contains("1500"),
        "{}",
        v.summary
    );
    assert!(v.summary.contains("node-2's eth0"), "{}", v.summary);
    // Path MTU discovery that works is no black hole.
    let v = case()
        .with(pmtu("cloudvm-1", "198.18.0.12", 1500, false))
        .verdict();
    assert_ne!(v.class, "mtu_blackhole", "{v:?}");
}

#[tokio::test]
async fn a_full_conntrack_table_is_overload() {
    let v = Case::new("cloudvm-1", "nodeport:node-2:30080")
        .with(icmp("cloudvm-1", "198.18.0.12", 20, 0))
        .with(tcp("cloudvm-1", "198.18.0.12:30080", 0, 0, 3))
        .with(facts(
            "node-2",
            pb::NodeFacts {
                conntrack_count: 4096,
                conntrack_max: 4096,
                ..Default::default()
            },
        ))
        .verdict();
    assert_eq!(class(&v), ("network_unreachable", "overload"), "{v:?}");
    assert!(v.summary.contains("4096/4096"));
}

#[tokio::test]
async fn partial_loss_is_degraded_and_names_the_hop() {
    let trace = run(
        CheckName::Path,
        "cloudvm-1",
        "198.18.0.12",
        Direction::Forward,
        Outcome::Trace(pb::TraceResult {
            hops: vec![
                pb::TraceHop {
                    ttl: 1,
                    host: "198.18.100.1".into(),
                    ..Default::default()
                },
                pb::TraceHop {
                    ttl: 2,
                    host: "198.18.0.12".into(),
                    loss_pct: 20.0,
                    ..Default::default()
                },
            ],
            reached: true,
            loss_from_hop: 2,
            reading: vec!["loss continues to the last hop from hop 2: real loss".into()],
            ..Default::default()
        }),
    );
    let v = Case::new("cloudvm-1", "probe:node-2")
        .with(icmp("cloudvm-1", "198.18.0.12", 20, 16))
        .with(reverse("node-2", "198.18.0.14", 20, 17))
        .with(trace)
        .verdict();
    assert_eq!(class(&v), ("degraded", "loss"), "{v:?}");
    assert!(v.summary.contains("hop 2 (198.18.0.12)"), "{}", v.summary);
}

#[tokio::test]
async fn vxlan_from_an_unregistered_address_is_an_overlay_source_mismatch() {
    let mut c = Case::new("node-3", "svc:default/web:80")
        .with(icmp("node-3", "198.19.2.10", 20, 0))
        .with(tcp("node-3", "198.18.200.80:80", 0, 0, 3))
        .with(pb::Check {
            detail: "node to node".into(),
            ..icmp("node-3", "198.18.0.12", 20, 20)
        });
    let seen_at = |probe: &str| Tunnel {
        observer: format!("{probe}/eth0"),
        probe: probe.into(),
        kind: "vxlan".into(),
        outer_src: Ipv4Addr::new(198, 18, 0, 23),
        outer_dst: Ipv4Addr::new(198, 18, 0, 12),
        packets: 12,
    };
    // The receiver first: the sender is still the one named.
    c.packets = Some(Packets {
        tunnels: vec![seen_at("node-2"), seen_at("node-3")],
        ..Default::default()
    });
    let v = c.verdict();
    assert_eq!(
        class(&v),
        ("cni_failure", "overlay_source_mismatch"),
        "{v:?}"
    );
    assert!(
        v.summary.starts_with("node-3 encapsulates")
            && v.summary.contains("198.18.0.23")
            && v.summary.contains("198.18.0.13"),
        "{}",
        v.summary
    );
    assert!(
        v.evidence
            .iter()
            .any(|e| e.observation.starts_with("node-2/eth0 receives"))
    );
    // Without captures, the tunnel device's local address tells the same.
    let v = Case::new("node-3", "svc:default/web:80")
        .with(icmp("node-3", "198.19.2.10", 20, 0))
        .with(facts(
            "node-3",
            pb::NodeFacts {
                tunnels: vec![pb::TunnelInfo {
                    device: "flannel.1".into(),
                    kind: "vxlan".into(),
                    local: "198.18.0.23".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ))
        .verdict();
    assert_eq!(v.cause, "overlay_source_mismatch", "{v:?}");
    assert!(v.confidence < 0.9);
}

#[tokio::test]
async fn cluster_dns_timing_out_on_one_node_is_dns_unreachable_and_names_kube_proxy() {
    let mut c = Case::new(CLIENT, NAME)
        .with(dns(
            CLIENT,
            "198.18.200.10",
            vec![
                answer("198.18.200.10:53", "resolv.conf", "TIMEOUT", &[]),
                answer("198.19.1.53:53", "explicit", "NOERROR", &["198.18.200.80"]),
            ],
        ))
        .with(upstream(true))
        .with(facts("node-3", pb::NodeFacts::default()));
    if let Some(n) = c.inventory.nodes.iter_mut().find(|n| n.name == "node-3") {
        n.kube_proxy.phase = PodPhase::Pending;
        n.kube_proxy.reason = Some("Evicted".into());
    }
    let v = c.verdict();
    assert_eq!(class(&v), ("dns_failure", "dns_unreachable"), "{v:?}");
    assert!(v.summary.contains("kube-proxy on node-3"), "{}", v.summary);
    assert!(v.fix.contains("node-3"));
    assert!(v.evidence.iter().any(|e| e.artifact == "inventory"));
}

#[tokio::test]
async fn dead_dns_pods_are_dns_service_down() {
    let v = Case::new(CLIENT, NAME)
        .with(dns(
            CLIENT,
            "198.18.200.10",
            vec![
                answer("198.18.200.10:53", "resolv.conf", "ERROR", &[]),
                answer("198.19.1.53:53", "explicit", "ERROR", &[]),
            ],
        ))
        .with(upstream(true))
        .verdict();
    assert_eq!(class(&v), ("dns_failure", "dns_service_down"), "{v:?}");
}

#[tokio::test]
async fn a_resolv_conf_pointing_elsewhere_is_pod_dns_config() {
    let v = Case::new(CLIENT, NAME)
        .with(dns(
            CLIENT,
            "198.18.200.53",
            vec![
                answer("198.18.200.53:53", "resolv.conf", "TIMEOUT", &[]),
                answer(
                    "198.18.200.10:53",
                    "explicit",
                    "NOERROR",
                    &["198.18.200.80"],
                ),
                answer("198.19.1.53:53", "explicit", "NOERROR", &["198.18.200.80"]),
            ],
        ))
        .with(upstream(true))
        .verdict();
    assert_eq!(class(&v), ("dns_failure", "pod_dns_config"), "{v:?}");
    assert!(v.summary.contains("198.18.200.53"), "{}", v.summary);
}

#[tokio::test]
async fn resolving_names_is_ok() {
    let v = Case::new(CLIENT, NAME)
        .with(dns(
            CLIENT,
            "198.18.200.10",
            vec![
                answer(
                    "198.18.200.10:53",
                    "resolv.conf",
                    "NOERROR",
                    &["198.18.200.80"],
                ),
                answer(
                    "198.18.200.10:53",
                    "explicit",
                    "NOERROR",
                    &["198.18.200.80"],
                ),
            ],
        ))
        .with(upstream(true))
        .verdict();
    assert_eq!(class(&v), ("ok", ""), "{v:?}");
}

#[tokio::test]
async fn missing_service_rules_with_a_reachable_backend_are_kube_proxy_rules_missing() {
    let mut c = Case::new("node-3", "svc:default/web:80")
        .with(icmp("node-3", "198.19.2.10", 20, 20))
        .with(tcp("node-3", "198.18.200.80:80", 0, 0, 3))
        .with(tcp("node-3", "198.19.2.10:8080", 3, 0, 0))
        .with(facts("node-3", pb::NodeFacts::default()));
    if let Some(n) = c.inventory.nodes.iter_mut().find(|n| n.name == "node-3") {
        n.kube_proxy.phase = PodPhase::Pending;
    }
    let v = c.verdict();
    assert_eq!(
        class(&v),
        ("cni_failure", "kube_proxy_rules_missing"),
        "{v:?}"
    );
    assert!(
        v.evidence
            .iter()
            .any(|e| e.observation.contains("answers directly"))
    );
}
