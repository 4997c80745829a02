//! CNI rules (`cni_failure`): overlay packets sent from an unregistered
//! address, Service NAT rules missing on a node.

use std::net::{IpAddr, Ipv4Addr};

use probemesh_model::check::CheckName;
use probemesh_model::inventory::Cidr;

use probemesh_model::evidence::Claim;
use probemesh_model::path::{Action, Resource, ResourceKind};

use super::{Evidence, Finding, all_lost, cite, seen, tcp_connected, tcp_failures};
use crate::diagnose::model::Check;
use crate::diagnose::path::Blocking;
use crate::diagnose::target::Role;

/// A failed check aimed at pods or a Service.
fn pod_path_failed<'a>(e: &Evidence<'a>) -> Option<&'a Check> {
    e.target.endpoints.iter().find_map(|ep| {
        if !matches!(ep.role, Role::Backend | Role::Pod | Role::ClusterIp) {
            return None;
        }
        e.aimed(CheckName::Icmp, &ep.host)
            .find(|c| all_lost(c))
            .or_else(|| tcp_failures(e, &ep.host).map(|(_, _, c)| c))
    })
}

pub(super) fn overlay_source_mismatch(e: &Evidence<'_>) -> Option<Finding> {
    let inv = e.inventory?;
    let failed = pod_path_failed(e)?;
    let registered = |ip: Ipv4Addr| inv.nodes.iter().any(|n| n.internal_ip == IpAddr::V4(ip));
    let mut evidence = vec![cite(failed, &failed.detail)];
    let mut unanswered_seen = vec![0];
    let mut wrong_source = Vec::new();
    let mut culprit: Option<(String, String, String)> = None;
    if let Some(p) = e.packets {
        let node_ip = |probe: &str| inv.node_of_probe(probe).map(|n| n.internal_ip);
        // A tunnel packet seen where it is not addressed to was seen
        // leaving: that observer's node is the sender.
        let (sent, received): (Vec<_>, Vec<_>) = p
            .tunnels
            .iter()
            .filter(|t| !registered(t.outer_src))
            .partition(|t| node_ip(t.observer.probe()) != Some(IpAddr::V4(t.outer_dst)));
        for t in &sent {
            let expected = node_ip(t.observer.probe()).map_or("?".to_owned(), |ip| ip.to_string());
            wrong_source.push(evidence.len());
            evidence.push(seen(
                &t.observer,
                format!(
                    "{} packets leave {} with outer source {} ({} packets to {}); {} is registered as {expected}",
                    t.kind.to_uppercase(),
                    t.observer,
                    t.outer_src,
                    t.packets,
                    t.outer_dst,
                    t.observer.probe
                ),
            ));
            culprit.get_or_insert((
                t.observer.probe().to_owned(),
                t.outer_src.to_string(),
                expected,
            ));
        }
        for t in &received {
            wrong_source.push(evidence.len());
            evidence.push(seen(
                &t.observer,
                format!(
                    "{} receives {} {} packets from {}, which is no node's registered address",
                    t.observer,
                    t.packets,
                    t.kind.to_uppercase(),
                    t.outer_src
                ),
            ));
        }
        if culprit.is_none()
            && let Some(t) = received.first()
        {
            // Only the receiving side was observed: name the source address.
            culprit = Some((
                format!("the node sending from {}", t.outer_src),
                t.outer_src.to_string(),
                "a node address".to_owned(),
            ));
        }
        let unanswered = p
            .fates
            .iter()
            .filter(|f| !f.answered() && f.seen_at.len() > 1)
            .filter_map(|f| Some((f, f.lost_after.clone()?)))
            .next();
        if let (Some((f, at)), Some(_)) = (unanswered, &culprit) {
            unanswered_seen.push(evidence.len());
            evidence.push(seen(
                &at,
                format!(
                    "{} reaches {at} through the tunnel and is never answered",
                    f.describe()
                ),
            ));
        }
    }
    let mut confidence = 0.9;
    if culprit.is_none() {
        // Without captures: the tunnel device's own local address.
        let (c, f) = e.facts(&e.source.probe)?;
        let node = inv.node_of_probe(&e.source.probe)?;
        let t = f.tunnels.iter().find(|t| {
            t.local
                .parse::<IpAddr>()
                .is_ok_and(|l| l != node.internal_ip)
        })?;
        wrong_source.push(evidence.len());
        evidence.push(cite(
            c,
            &format!(
                "{} ({}) sends from local {}; {} is registered as {}",
                t.device, t.kind, t.local, node.name, node.internal_ip
            ),
        ));
        culprit = Some((
            e.source.probe.clone(),
            t.local.clone(),
            node.internal_ip.to_string(),
        ));
        confidence = 0.75;
    }
    let (probe, wrong, right) = culprit?;
    if let Some(under) = e
        .ran(CheckName::Icmp)
        .find(|c| c.ok() && c.detail.contains("node to node"))
    {
        evidence.push(cite(under, "node to node works: the underlay is fine"));
    }
    if let Some((c, f)) = e.facts(&probe) {
        for i in f.interfaces.iter().filter(|i| {
            i.addresses
                .iter()
                .filter(|a| a.parse::<Cidr>().is_ok_and(|c| c.addr().is_ipv4()) || a.contains('.'))
                .count()
                > 1
        }) {
            wrong_source.push(evidence.len());
            evidence.push(cite(
                c,
                &format!(
                    "{} holds {} addresses: {}",
                    i.name,
                    i.addresses.len(),
                    i.addresses.join(", ")
                ),
            ));
        }
    }
    Some(Finding {
        claims: vec![
            Claim::new(
                format!(
                    "{probe} encapsulates overlay traffic with outer source {wrong} instead of its registered address {right}"
                ),
                &wrong_source,
            ),
            Claim::new(
                format!("pod and Service traffic from {probe} is never answered"),
                &unanswered_seen,
            ),
        ],
        fix: format!(
            "pin the overlay to the registered address: flanneld --iface=eth0 or --public-ip={right} (Calico: IP_AUTODETECTION_METHOD=interface=eth0 / can-reach), or remove the extra address {wrong} (DHCP) from the NIC; then restart the CNI agent on {probe}"
        ),
        evidence,
        confidence,
        blocking: Some(Blocking::new(
            &probe,
            Action::Dropped,
            Resource::new(
                ResourceKind::Address,
                format!("{probe}: tunnel outer source {wrong} (registered {right})"),
            ),
            &wrong_source,
        )),
    })
}

pub(super) fn kube_proxy_rules_missing(e: &Evidence<'_>) -> Option<Finding> {
    let svc = e.target.service.as_ref()?;
    let inv = e.inventory?;
    for ep in e
        .hosts()
        .filter(|ep| matches!(ep.role, Role::ClusterIp | Role::Node))
    {
        let Some((_, _, failed)) = tcp_failures(e, &ep.host) else {
            continue;
        };
        // ClusterIP: rewritten on the source's node; NodePort: on the target node.
        let node_probe = match ep.role {
            Role::ClusterIp => Some(e.source.probe.clone()),
            _ => ep.node.as_deref().and_then(|n| inv.node(n)?.probe.clone()),
        };
        let Some(node_probe) = node_probe else {
            continue;
        };
        let node = inv.node_of_probe(&node_probe);
        let rules_missing = e.facts(&node_probe).filter(|(_, f)| f.nat_paths.is_empty());
        let proxy_down = node.and_then(|n| super::kube_proxy_down(Some(inv), &n.name, &node_probe));
        let stale = stale_nat(e, &svc.id, &node_probe);
        if rules_missing.is_none() && proxy_down.is_none() && stale.is_none() {
            continue;
        }
        let mut evidence = vec![cite(failed, &failed.detail)];
        let mut missing = Vec::new();
        if let Some((c, _)) = rules_missing {
            missing.push(evidence.len());
            evidence.push(cite(
                c,
                &format!(
                    "no NAT rule for Service {} port {} on {node_probe}",
                    svc.id, svc.port
                ),
            ));
        }
        if let Some((c, wrong, endpoints)) = &stale {
            missing.push(evidence.len());
            evidence.push(cite(
                c,
                &format!(
                    "the NAT rules on {node_probe} send Service {} to {}, which is no ready endpoint of it ({})",
                    svc.id,
                    wrong.join(", "),
                    endpoints.join(", ")
                ),
            ));
        }
        let dispatch =
            crate::diagnose::checks::service_dispatch(e.facts(&node_probe).map(|(_, f)| f));
        let mut fix = format!(
            "restore kube-proxy on {node_probe} (kubectl -n kube-system get pods -o wide -l k8s-app=kube-proxy; it must be Running there) so that {dispatch} holds the Service's rules"
        );
        if let Some(down) = proxy_down {
            missing.push(evidence.len());
            evidence.push(down.item);
            fix = format!("{} ({dispatch})", down.fix);
        }
        for b in e.hosts().filter(|b| b.role == Role::Backend) {
            if tcp_connected(e, &b.host).is_some()
                && let Some(c) = e
                    .aimed(CheckName::TcpConnect, &b.host)
                    .find(|c| c.received > 0)
            {
                evidence.push(cite(
                    c,
                    &format!("the backend {} answers directly", b.address()),
                ));
            }
        }
        return Some(Finding {
            claims: vec![
                Claim::new(
                    if stale.is_some() && rules_missing.is_none() {
                        format!(
                            "{node_probe}'s NAT rules for Service {} are stale: they rewrite it to no ready endpoint",
                            svc.id
                        )
                    } else {
                        format!(
                            "no kube-proxy NAT rules for Service {} on {node_probe}",
                            svc.id
                        )
                    },
                    &missing,
                ),
                Claim::new(
                    format!("{} is not rewritten to a backend", ep.address()),
                    &[0],
                ),
            ],
            fix,
            evidence,
            confidence: 0.8,
            blocking: Some(Blocking::new(
                &node_probe,
                Action::Dropped,
                Resource::new(
                    ResourceKind::NatChain,
                    match &stale {
                        Some((_, wrong, _)) if rules_missing.is_none() => format!(
                            "{node_probe}: {dispatch} → {} DNAT to {}",
                            svc.id,
                            wrong.join(", ")
                        ),
                        _ => format!("{node_probe}: {dispatch} has no rule for {}", svc.id),
                    },
                ),
                &missing,
            )),
        });
    }
    None
}

/// The NAT paths `probe` reported for Service `id` when none of them ends
/// at a ready endpoint of it (a stale DNAT: a wrong port, a gone pod): the
/// facts check, the DNAT targets, and the endpoints the inventory lists.
fn stale_nat<'a>(
    e: &Evidence<'a>,
    id: &str,
    probe: &str,
) -> Option<(&'a Check, Vec<String>, Vec<String>)> {
    let (c, f) = e.facts(probe)?;
    let (namespace, name) = id.split_once('/')?;
    let service = e.inventory?.service(namespace, name)?;
    let endpoints: Vec<String> = service
        .ready_endpoints()
        .map(|ep| format!("{}:{}", ep.ip, ep.port))
        .collect();
    let targets: Vec<String> = f
        .nat_paths
        .iter()
        .filter_map(|p| p.rsplit_once("DNAT ").map(|(_, t)| t.trim().to_owned()))
        .collect();
    if endpoints.is_empty() || targets.is_empty() || targets.iter().any(|t| endpoints.contains(t)) {
        return None;
    }
    Some((c, targets, endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::fixtures::*;

    #[tokio::test]
    async fn vxlan_from_an_unregistered_address_is_an_overlay_source_mismatch() {
        let mut c = Case::new("node-3", "svc:default/web:80")
            .with(icmp("node-3", "198.19.2.10", 20, 0))
            .with(tcp("node-3", "198.18.200.80:80", 0, 0, 3))
            .with(Check {
                detail: "node to node".into(),
                ..icmp("node-3", "198.18.0.12", 20, 20)
            });
        let seen_at = |probe: &str| Tunnel {
            observer: observer(probe, "eth0"),
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
        assert_eq!(
            v.cause.map_or("", Cause::as_str),
            "overlay_source_mismatch",
            "{v:?}"
        );
        assert!(v.confidence < 0.9);
    }

    #[tokio::test]
    async fn a_service_whose_only_endpoint_is_not_ready_is_refused_not_a_kube_proxy_fault() {
        let mut c = Case::new("node-3", "svc:default/web:80")
            .with(icmp("node-3", "198.19.2.10", 20, 20))
            .with(tcp("node-3", "198.18.200.80:80", 0, 3, 0))
            .with(facts("node-3", pb::NodeFacts::default()));
        for ep in c
            .inventory
            .services
            .iter_mut()
            .flat_map(|s| s.endpoints.iter_mut())
        {
            ep.ready = false;
        }
        let v = c.verdict();
        assert_eq!(class(&v), ("port_unreachable", "refused"), "{v:?}");
        assert!(
            v.summary
                .contains("no ready endpoint: web-0 198.19.2.10:8080 not ready"),
            "{}",
            v.summary
        );
        assert!(v.fix.contains("endpointslices"), "{}", v.fix);
    }

    #[tokio::test]
    async fn missing_service_rules_with_a_reachable_backend_are_kube_proxy_rules_missing() {
        let mut c = Case::new("node-3", "svc:default/web:80")
            .with(icmp("node-3", "198.19.2.10", 20, 20))
            .with(tcp("node-3", "198.18.200.80:80", 0, 0, 3))
            .with(tcp("node-3", "198.19.2.10:8080", 3, 0, 0))
            .with(facts("node-3", pb::NodeFacts::default()));
        if let Some(kp) = c
            .inventory
            .nodes
            .iter_mut()
            .find(|n| n.name == "node-3")
            .and_then(|n| n.kube_proxy.as_mut())
        {
            kp.phase = probemesh_model::inventory::PodPhase::Pending;
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

    #[tokio::test]
    async fn a_dnat_to_no_ready_endpoint_is_stale_service_nat() {
        let case = |dnat: &str| {
            Case::new("node-3", "svc:default/web:80")
                .with(icmp("node-3", "198.19.2.10", 20, 20))
                .with(tcp("node-3", "198.18.200.80:80", 0, 0, 3))
                .with(facts(
                    "node-3",
                    pb::NodeFacts {
                        nat_paths: vec![format!(
                            "KUBE-SERVICES -> KUBE-SVC-WEB -> KUBE-SEP-WEB0 -> DNAT {dnat}"
                        )],
                        ..Default::default()
                    },
                ))
                .verdict()
        };
        let wrong_port = case("198.19.2.10:8081");
        assert_eq!(
            class(&wrong_port),
            ("cni_failure", "kube_proxy_rules_missing"),
            "{wrong_port:#?}"
        );
        assert!(
            wrong_port.summary.contains("stale"),
            "{}",
            wrong_port.summary
        );
        assert!(
            wrong_port.evidence.iter().any(|e| e
                .observation
                .contains("198.19.2.10:8081, which is no ready endpoint")),
            "{wrong_port:#?}"
        );
        // The same rules to the real endpoint are not stale.
        let right = case("198.19.2.10:8080");
        assert_ne!(class(&right).0, "cni_failure", "{right:#?}");
    }

    #[tokio::test]
    async fn kube_proxy_in_nftables_mode_reads_the_same_and_names_its_table() {
        let web = "service-SUSTUHLJ-default/web/tcp/http";
        let walk = |dnat: &str| pb::NatPath {
            backend: pb::NatBackend::Nftables.into(),
            table: "ip kube-proxy".into(),
            chains: vec!["services".into(), "@service-ips".into(), web.into()],
            end: pb::NatEnd::Dnat.into(),
            to_destination: dnat.into(),
            masquerade: true,
        };
        let case = |dnat: &str| {
            Case::new("node-3", "svc:default/web:80")
                .with(icmp("node-3", "198.19.2.10", 20, 20))
                .with(tcp("node-3", "198.18.200.80:80", 0, 0, 3))
                .with(facts(
                    "node-3",
                    pb::NodeFacts {
                        nat_paths: vec![format!(
                            "services -> @service-ips -> {web} -> DNAT {dnat}"
                        )],
                        nat_walk: vec![walk(dnat)],
                        kube_proxy_backends: vec![pb::NatBackend::Nftables.into()],
                        ..Default::default()
                    },
                ))
                .verdict()
        };
        let stale = case("198.19.2.10:8081");
        assert_eq!(
            class(&stale),
            ("cni_failure", "kube_proxy_rules_missing"),
            "{stale:#?}"
        );
        assert!(
            stale.fix.contains("so that table ip kube-proxy holds"),
            "{}",
            stale.fix
        );
        assert_ne!(class(&case("198.19.2.10:8080")).0, "cni_failure");
        // With every rule gone the facts cannot tell the mode: both names.
        let mut gone = Case::new("node-3", "svc:default/web:80")
            .with(icmp("node-3", "198.19.2.10", 20, 20))
            .with(tcp("node-3", "198.18.200.80:80", 0, 0, 3))
            .with(facts("node-3", pb::NodeFacts::default()));
        if let Some(kp) = gone
            .inventory
            .nodes
            .iter_mut()
            .find(|n| n.name == "node-3")
            .and_then(|n| n.kube_proxy.as_mut())
        {
            kp.phase = probemesh_model::inventory::PodPhase::Pending;
        }
        let v = gone.verdict();
        assert!(
            v.fix.contains("KUBE-SERVICES or table ip kube-proxy"),
            "{}",
            v.fix
        );
    }
}
