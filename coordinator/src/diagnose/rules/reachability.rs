//! Reachability rules (`network_unreachable`): a full conntrack table, a
//! missing overlay route, ICMP dropped by a firewall, packets that leave and
//! never arrive.

use probemesh_model::check::{CheckName, Direction};

use probemesh_model::evidence::Claim;
use probemesh_model::path::{Action, Resource, ResourceKind};

use super::{
    Evidence, Finding, all_lost, cite, cite_hit, dead_delivery, far_probe, return_route, route_for,
    rule_hit, seen, tcp_connected, unanswered_to,
};
use crate::diagnose::checks;
use crate::diagnose::model::Check;
use crate::diagnose::packets::Proto;
use crate::diagnose::path::Blocking;

// ------------------------------------------------------- reachability

pub(super) fn overload(e: &Evidence<'_>) -> Option<Finding> {
    let failing: Vec<&Check> = e
        .checks
        .iter()
        .filter(|c| {
            (c.name == CheckName::Icmp || c.name == CheckName::TcpConnect)
                && c.failed()
                && c.received == 0
        })
        .collect();
    if failing.is_empty() {
        return None;
    }
    let (c, f) = e.ran(CheckName::NodeFacts).find_map(|c| {
        let f = c.facts()?;
        checks::conntrack_use(f)
            .filter(|u| *u >= checks::CONNTRACK_FULL)
            .map(|_| (c, f))
    })?;
    let mut evidence = vec![cite(
        c,
        &format!(
            "conntrack table on {} holds {} of {} entries: new flows are dropped",
            c.from, f.conntrack_count, f.conntrack_max
        ),
    )];
    evidence.extend(failing.iter().take(4).map(|c| cite(c, &c.detail)));
    let fails: Vec<usize> = (1..evidence.len()).collect();
    Some(Finding {
        claims: vec![
            Claim::new(
                format!(
                    "{}'s conntrack table is full ({}/{}): it drops new flows",
                    c.from, f.conntrack_count, f.conntrack_max
                ),
                &[0],
            ),
            Claim::new(
                format!(
                    "{} of the run's connections and pings get no answer",
                    failing.len()
                ),
                &fails,
            ),
        ],
        fix: format!(
            "on {}: find what fills it (conntrack -S; conntrack -L | sort by source), then raise net.netfilter.nf_conntrack_max (and the hash size) or shorten timeouts; `dmesg` shows \"nf_conntrack: table full, dropping packet\"",
            c.from
        ),
        evidence,
        confidence: 0.9,
        blocking: Some(Blocking::new(
            &c.from,
            Action::Dropped,
            Resource::new(
                ResourceKind::Conntrack,
                format!(
                    "{}: nf_conntrack {}/{}",
                    c.from, f.conntrack_count, f.conntrack_max
                ),
            ),
            &[0],
        )),
    })
}

pub(super) fn routing(e: &Evidence<'_>) -> Option<Finding> {
    let inv = e.inventory?;
    let src_node = e.source.node.as_deref()?;
    let (facts_check, facts) = e
        .facts(&e.source.probe)
        .filter(|(_, f)| !f.routes.is_empty())?;
    for ep in e.hosts().filter(|ep| ep.role.is_pod()) {
        let Some(failed) = e.aimed(CheckName::Icmp, &ep.host).find(|c| all_lost(c)) else {
            continue;
        };
        let ip = ep.ip()?;
        let Some((owner, pod_cidr)) = inv.node_owning(ip).filter(|(n, _)| n.name != src_node)
        else {
            continue;
        };
        let best = route_for(&facts.routes, ip);
        let (via, fate) = match best {
            Some((r, 0)) => (
                format!("only the default route matches: {}", r.raw),
                "leaves by the default route and is lost",
            ),
            None => (
                "no route matches at all".to_owned(),
                "has no route and is lost",
            ),
            Some(_) => continue,
        };
        let mut evidence = vec![
            cite(
                facts_check,
                &format!(
                    "{src_node} has no route to {} ({}'s pods): for {ip} {via}",
                    pod_cidr.addr(),
                    owner.name
                ),
            ),
            cite(failed, &failed.detail),
        ];
        if let Some(under) = e
            .ran(CheckName::Icmp)
            .find(|c| c.to == owner.internal_ip.to_string() && c.ok())
        {
            evidence.push(cite(
                under,
                &format!("{} itself answers: the nodes reach each other", owner.name),
            ));
        }
        return Some(Finding {
            claims: vec![
                Claim::new(
                    format!(
                        "{src_node} has no route to {}/{} ({}'s pod network)",
                        pod_cidr.addr(),
                        pod_cidr.prefix(),
                        owner.name
                    ),
                    &[0],
                ),
                Claim::new(format!("traffic to {ip} {fate}"), &[0, 1]),
            ],
            fix: format!(
                "restore the overlay route on {src_node} (flannel: ip route replace {}/{} via {} dev flannel.1 onlink, or restart flanneld, which rewrites its routes); check for a stale route sync or a manual `ip route del`",
                pod_cidr.addr(),
                pod_cidr.prefix(),
                pod_cidr.addr()
            ),
            evidence,
            confidence: 0.85,
            blocking: Some(Blocking::new(
                src_node,
                Action::Dropped,
                Resource::new(
                    ResourceKind::Route,
                    format!(
                        "{src_node}: no route to {}/{}",
                        pod_cidr.addr(),
                        pod_cidr.prefix()
                    ),
                ),
                &[0],
            )),
        });
    }
    None
}

pub(super) fn far_link(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let Some(lost) = e.aimed(CheckName::Icmp, &ep.host).find(|c| all_lost(c)) else {
            continue;
        };
        let Some((fc, route)) = dead_delivery(e, ep) else {
            continue;
        };
        let device = route
            .split_whitespace()
            .skip_while(|w| *w != "dev")
            .nth(1)
            .unwrap_or("its device");
        return Some(Finding {
            claims: vec![
                Claim::new(format!("ICMP echo to {} gets no reply", ep.host), &[0]),
                Claim::new(
                    format!(
                        "{}'s route to it leads to {device}, which has no carrier ({route})",
                        fc.from
                    ),
                    &[1],
                ),
            ],
            fix: format!(
                "on {}: ip -d link show {device} and the link behind it (a pod's veth, a cable, a bond member): bring it up or find why it went down (dmesg, the CNI's logs)",
                fc.from
            ),
            evidence: vec![
                cite(lost, &lost.detail),
                cite(fc, &format!("{}'s route to {}: {route}", fc.from, ep.host)),
            ],
            confidence: 0.85,
            blocking: Some(Blocking::new(
                &fc.from,
                Action::Dropped,
                Resource::new(
                    ResourceKind::Interface,
                    format!("{}: {device} has no carrier ({route})", fc.from),
                ),
                &[1],
            )),
        });
    }
    None
}

pub(super) fn firewall(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let host = ep.host.as_str();
        let Some(lost) = e.aimed(CheckName::Icmp, host).find(|c| all_lost(c)) else {
            continue;
        };
        let tcp = e
            .aimed(CheckName::TcpConnect, host)
            .chain(e.aimed(CheckName::TcpTransfer, host))
            .find(|c| c.received > 0 || c.ok());
        let reached = unanswered_to(e, host, Proto::Icmp)
            .into_iter()
            .find(|(_, at)| {
                ep.node.as_deref().is_some_and(|n| at.on(n))
                    || ep.probe.as_deref().is_some_and(|p| at.on(p))
            });
        // A far side whose route back refuses the source cannot answer:
        // that is the return path (`echo-return-route`), not a firewall.
        if (tcp.is_none() && reached.is_none())
            || return_route(e, ep).is_some()
            || dead_delivery(e, ep).is_some()
        {
            continue;
        }
        let mut evidence = vec![cite(lost, &lost.detail)];
        let mut claims = vec![Claim::new(
            format!("ICMP echo to {host} gets no reply"),
            &[0],
        )];
        let mut dropped = vec![0];
        if let Some(c) = tcp {
            dropped.push(evidence.len());
            claims.push(Claim::new(
                "the host is up (TCP connects)",
                &[evidence.len()],
            ));
            evidence.push(cite(
                c,
                &format!("TCP to the same host works: {}", c.detail),
            ));
        }
        if let Some((what, at)) = &reached {
            dropped.push(evidence.len());
            claims.push(Claim::new(
                format!("the echoes reach {at} and are never answered"),
                &[evidence.len()],
            ));
            evidence.push(seen(
                at,
                format!("{what} reaches {at} and is never answered"),
            ));
        }
        if let Some(back) = e.ran(CheckName::Icmp).find(|c| {
            c.direction == Direction::Reverse
                && c.ok()
                && ep.probe.as_deref() == Some(c.from.as_str())
        }) {
            evidence.push(cite(back, &format!("the other way works: {}", back.detail)));
        }
        let who = ep
            .node
            .clone()
            .or_else(|| ep.probe.clone())
            .unwrap_or_else(|| host.to_owned());
        let mut blocker = Resource::new(
            ResourceKind::Rule,
            format!("{who}: a rule dropping ICMP echo-request"),
        );
        if let Some((c, hit)) = far_probe(e, ep).and_then(|p| rule_hit(e, &p, "icmp")) {
            let (item, named) = cite_hit(c, hit);
            dropped.push(evidence.len());
            evidence.push(item);
            blocker = named;
        }
        claims.push(Claim::new(
            format!(
                "a firewall drops it{}",
                if reached.is_some() {
                    format!(" on {who}")
                } else {
                    String::new()
                }
            ),
            &dropped,
        ));
        return Some(Finding {
            claims,
            fix: format!(
                "on {who}: find the rule dropping ICMP (iptables -S INPUT | grep icmp, nft list ruleset, firewalld, security groups) and allow echo-request; ping is how the next engineer will test this path"
            ),
            evidence,
            confidence: if reached.is_some() { 0.9 } else { 0.75 },
            blocking: Some(Blocking::new(&who, Action::Dropped, blocker, &dropped)),
        });
    }
    None
}

pub(super) fn link(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let host = ep.host.as_str();
        let Some(lost) = e.aimed(CheckName::Icmp, host).find(|c| all_lost(c)) else {
            continue;
        };
        if tcp_connected(e, host).is_some() {
            continue;
        }
        let leaves = unanswered_to(e, host, Proto::Icmp)
            .into_iter()
            .find(|(_, at)| at.on(&e.source.probe));
        let trace = e.aimed(CheckName::Path, host).next();
        if leaves.is_none() && trace.is_none() {
            continue;
        }
        let mut evidence = vec![cite(lost, &lost.detail)];
        let mut claims = vec![Claim::new(
            format!("{host} is unreachable from {}", e.source.spec),
            &[0],
        )];
        if let Some((what, at)) = &leaves {
            claims.push(Claim::new(
                format!("packets leave {at} and no observer sees them again"),
                &[evidence.len()],
            ));
            evidence.push(seen(
                at,
                format!("{what} leaves {at} and no observer sees it again"),
            ));
        }
        if let Some(t) = trace {
            claims.push(Claim::new(
                "the path check shows how far they get",
                &[evidence.len()],
            ));
            evidence.push(cite(t, &t.detail));
        }
        return Some(Finding {
            claims,
            fix: "follow the path check's last answering hop: check that hop's link, routes and firewall towards the target".into(),
            evidence,
            confidence: if leaves.is_some() { 0.7 } else { 0.5 },
            blocking: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::fixtures::*;

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
    async fn a_drop_rule_that_counted_the_echoes_is_named_as_the_blocker() {
        let hits = |grew_by| {
            facts(
                "node-2",
                pb::NodeFacts {
                    rule_hits: vec![
                        pb::RuleHits {
                            table: "filter".into(),
                            chain: "INPUT".into(),
                            rule: "-A INPUT -p tcp -m tcp --dport 22 -j DROP".into(),
                            target: "DROP".into(),
                            packets: 90,
                            grew_by: 90,
                        },
                        pb::RuleHits {
                            table: "filter".into(),
                            chain: "INPUT".into(),
                            rule: "-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP".into(),
                            target: "DROP".into(),
                            packets: 40,
                            grew_by,
                        },
                    ],
                    routes: vec![pb::Route {
                        destination: "default".into(),
                        raw: "default via 198.18.0.1 dev eth0".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )
        };
        let case = |grew_by| {
            Case::new("cloudvm-1", "probe:node-2")
                .with(icmp("cloudvm-1", "198.18.0.12", 20, 0))
                .with(tcp("cloudvm-1", "198.18.0.12:8080", 3, 0, 0))
                .with(hits(grew_by))
                .verdict()
        };
        let v = case(20);
        assert_eq!(class(&v), ("network_unreachable", "firewall"), "{v:#?}");
        let blocker = v
            .path
            .iter()
            .find_map(|s| s.resource.as_ref())
            .expect("a named blocker");
        // The ICMP rule, not the busier rule for another protocol.
        assert_eq!(
            blocker.name,
            "node-2: -A INPUT -p icmp -m icmp --icmp-type 8 -j DROP (+20 packets)"
        );
        assert!(
            v.evidence
                .iter()
                .any(|e| e.observation.contains("counted 20 packets during the run")),
            "{v:#?}"
        );
        // A rule that counted nothing during the run is not named.
        let v = case(0);
        let blocker = v
            .path
            .iter()
            .find_map(|s| s.resource.as_ref())
            .expect("blocker");
        assert_eq!(blocker.name, "node-2: a rule dropping ICMP echo-request");
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
            .with(Check {
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
        assert_ne!(v.cause.map_or("", Cause::as_str), "routing", "{v:?}");
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
    async fn a_far_route_without_carrier_is_link_not_a_firewall() {
        let v = Case::new("node-1", "pod:default/web-0")
            .with(icmp("node-1", "198.19.2.10", 20, 0))
            .with(facts(
                "node-2",
                pb::NodeFacts {
                    routes: vec![pb::Route {
                        destination: "198.19.2.0/24".into(),
                        device: "cni0".into(),
                        raw:
                            "198.19.2.0/24 dev cni0 proto kernel scope link src 198.19.2.1 linkdown"
                                .into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ))
            .verdict();
        assert_eq!(class(&v), ("network_unreachable", "link"), "{v:#?}");
        assert!(
            v.summary.contains("leads to cni0, which has no carrier"),
            "{}",
            v.summary
        );
    }
}
