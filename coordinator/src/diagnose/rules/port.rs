//! Port rules (`port_unreachable`): nothing listens, the app listens on
//! loopback only, or a rule drops or resets the connection.

use probemesh_model::check::{CheckName, Direction};

use probemesh_model::evidence::Claim;
use probemesh_model::path::{Action, Resource, ResourceKind};

use super::{
    Evidence, Finding, cite, cite_hit, far_probe, icmp_ok, listed, rule_hit, seen, tcp_failures,
    unanswered_to,
};
use crate::diagnose::checks;
use crate::diagnose::model::{Check, ObserverInterface};
use crate::diagnose::packets::Proto;
use crate::diagnose::path::Blocking;
use crate::diagnose::target::Role;

pub(super) fn loopback_only(e: &Evidence<'_>) -> Option<Finding> {
    let c = e.ran(CheckName::Listener).find(|c| {
        c.listeners().is_some_and(|l| {
            let tcp: Vec<_> = l
                .listeners
                .iter()
                .filter(|x| x.protocol.starts_with("tcp"))
                .collect();
            !tcp.is_empty() && tcp.iter().all(|x| checks::is_loopback(&x.address))
        })
    })?;
    let failed: Vec<&Check> = e
        .hosts()
        .filter_map(|ep| tcp_failures(e, &ep.host).map(|(_, _, c)| c))
        .collect();
    if failed.is_empty() {
        return None;
    }
    let l = c.listeners()?;
    let bound: Vec<String> = l
        .listeners
        .iter()
        .map(|x| {
            format!(
                "{}:{}{}",
                x.address,
                x.port,
                if x.process.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", x.process)
                }
            )
        })
        .collect();
    let mut evidence = vec![cite(c, &format!("listens on {} only", bound.join(", ")))];
    evidence.extend(failed.iter().map(|f| cite(f, &f.detail)));
    let failures: Vec<usize> = (1..evidence.len()).collect();
    Some(Finding {
        claims: vec![
            Claim::new(
                format!("the app in {} listens on {} only", c.place(), bound.join(", ")),
                &[0],
            ),
            Claim::new("connections from other hosts fail", &failures),
        ],
        fix: "make the app bind 0.0.0.0 (or the pod IP) instead of 127.0.0.1: its listen/host setting (e.g. --host 0.0.0.0), then restart it".into(),
        evidence,
        confidence: 0.9,
        blocking: Some(Blocking::new(
            c.place(),
            Action::Rejected,
            Resource::new(
                ResourceKind::Listener,
                format!("{}: {} only", c.place(), bound.join(", ")),
            ),
            &[0],
        )),
    })
}

/// The destination's own capture, when it shows the resets did not come
/// from it: an interface of the destination (a pod of the target other
/// than the source's; without one, the host that holds `host`, when it is
/// not the source) was captured and no TCP packet of the run reached any of them,
/// while connections to `host` were reset. Returns one such interface.
fn reset_on_the_way(e: &Evidence<'_>, host: &str, refused: u32) -> Option<ObserverInterface> {
    if refused == 0 {
        return None;
    }
    let p = e.packets?;
    let source_pod = e
        .source
        .pod
        .as_ref()
        .map(|(ns, name)| format!("pod:{ns}/{name}/"));
    let holder = host
        .parse()
        .ok()
        .and_then(|ip| e.target.holder(e.inventory, ip))
        .filter(|h| !h.pod && h.probe != e.source.probe);
    let target_pods: Vec<&ObserverInterface> = p
        .captured
        .iter()
        .filter(|i| {
            i.interface.starts_with("pod:")
                && source_pod
                    .as_deref()
                    .is_none_or(|s| !i.interface.starts_with(s))
        })
        .collect();
    // A backend pod's own capture is the destination; without one, the
    // host's.
    let destination: Vec<&ObserverInterface> = if target_pods.is_empty() {
        p.captured
            .iter()
            .filter(|i| holder.as_ref().is_some_and(|h| i.on(&h.probe)))
            .collect()
    } else {
        target_pods
    };
    let reached = p
        .fates
        .iter()
        .any(|f| f.proto == Proto::Tcp && destination.iter().any(|d| f.seen_at.contains(d)));
    (!reached).then(|| destination.first().map(|d| (*d).clone()))?
}

pub(super) fn refused(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let Some((refused, _, failed)) = tcp_failures(e, &ep.host) else {
            continue;
        };
        if refused == 0 || reset_on_the_way(e, &ep.host, refused).is_some() {
            continue;
        }
        let listener = e
            .ran(CheckName::Listener)
            .find(|c| c.failed() && c.listeners().is_some_and(|l| l.listeners.is_empty()));
        let listening = e.ran(CheckName::Listener).any(|c| c.ok());
        if listening {
            continue;
        }
        let mut evidence = vec![cite(failed, &failed.detail)];
        let alive = e
            .ran(CheckName::Icmp)
            .find(|c| c.ok() && c.direction == Direction::Forward && c.from == e.source.spec);
        if let Some(c) = alive {
            evidence.push(cite(c, &format!("the host is up: {}", c.detail)));
        }
        let mut confidence: f64 = 0.75;
        let mut nothing_listens = vec![0];
        if let Some(c) = listener {
            nothing_listens.push(evidence.len());
            evidence.push(cite(c, &c.detail));
            confidence = 0.9;
        }
        let port = e
            .target
            .endpoints
            .iter()
            .find(|b| b.role.is_pod())
            .and_then(|b| b.port)
            .or(ep.port)
            .unwrap_or_default();
        let place = listener.map_or(ep.host.as_str(), |c| c.place()).to_owned();
        return Some(Finding {
            claims: vec![
                Claim::new(
                    format!(
                        "connection refused: nothing listens on port {port}{}",
                        listener.map_or(String::new(), |c| format!(" in {}", c.place()))
                    ),
                    &nothing_listens,
                ),
                Claim::new("the kernel answers SYNs with RST", &[0]),
            ],
            fix: format!(
                "start the application (is the container running? kubectl get pod, kubectl logs --previous) and check that it listens on {port}, the Service's targetPort"
            ),
            evidence,
            confidence,
            blocking: Some(Blocking::new(
                &place,
                Action::Rejected,
                Resource::new(
                    ResourceKind::Listener,
                    format!("{place}: nothing on port {port}"),
                ),
                &nothing_listens,
            )),
        });
    }
    None
}

pub(super) fn filtered(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let host = ep.host.as_str();
        let Some((refused, timed_out, failed)) = tcp_failures(e, host) else {
            continue;
        };
        let host_up = icmp_ok(e, host)
            || (ep.role == Role::ClusterIp
                && e.hosts()
                    .any(|b| b.role == Role::Backend && icmp_ok(e, &b.host)));
        if !host_up {
            continue;
        }
        let listening = e.ran(CheckName::Listener).any(|c| c.ok());
        let on_the_way = reset_on_the_way(e, host, refused);
        if timed_out == 0 && !(refused > 0 && (listening || on_the_way.is_some())) {
            continue;
        }
        let mut evidence = vec![cite(failed, &failed.detail)];
        let pinged = e.aimed(CheckName::Icmp, host).find(|c| c.ok()).or_else(|| {
            e.hosts()
                .filter(|b| ep.role == Role::ClusterIp && b.role == Role::Backend)
                .find_map(|b| e.aimed(CheckName::Icmp, &b.host).find(|c| c.ok()))
        });
        let mut up = Vec::new();
        if let Some(c) = pinged {
            up.push(evidence.len());
            evidence.push(cite(c, &format!("the host answers ping: {}", c.detail)));
        }
        let mut how_seen = vec![0];
        if let Some(c) = e.ran(CheckName::Listener).find(|c| c.ok()) {
            how_seen.push(evidence.len());
            evidence.push(cite(c, &format!("the app listens: {}", c.detail)));
        }
        if let Some(pod) = &on_the_way {
            how_seen.push(evidence.len());
            evidence.push(seen(
                pod,
                format!("no SYN reaches the destination's own capture ({pod}), yet RSTs come back"),
            ));
        }
        let dropped_at = unanswered_to(e, host, Proto::Tcp).into_iter().next();
        let mut confidence = 0.8;
        let mut drops = vec![0];
        if let Some((what, at)) = &dropped_at {
            drops.push(evidence.len());
            evidence.push(seen(
                at,
                format!("{what} reaches {at} and is never answered"),
            ));
            confidence = 0.9;
        }
        let where_ = dropped_at
            .as_ref()
            .map(|(_, at)| at.probe().to_owned())
            .or_else(|| ep.node.clone())
            .unwrap_or_else(|| host.to_owned());
        let hit = dropped_at
            .as_ref()
            .map(|(_, at)| at.probe().to_owned())
            .or_else(|| far_probe(e, ep))
            .and_then(|p| rule_hit(e, &p, "tcp"))
            .map(|(c, hit)| {
                drops.push(evidence.len());
                let (item, named) = cite_hit(c, hit);
                evidence.push(item);
                named
            });
        let how = if timed_out > 0 {
            "SYNs get no answer at all (no SYN-ACK, no RST)"
        } else if on_the_way.is_some() {
            "the connection is reset on the way: the destination never sees the SYN, so it never sent the RST"
        } else {
            "the connection is reset although the app listens: a RST the destination never sent"
        };
        return Some(Finding {
            claims: vec![
                Claim::new(format!("TCP to {} is filtered", ep.address()), &[0]),
                Claim::new("the host is up (it answers ping)", &up),
                Claim::new(how, &how_seen),
                Claim::new(
                    format!(
                        "a rule drops it{}",
                        if dropped_at.is_some() {
                            format!(" on {where_}")
                        } else {
                            " on the path or at the destination".to_owned()
                        }
                    ),
                    &drops,
                ),
            ],
            fix: format!(
                "find the rule on {where_}: iptables-save | grep -n {} (raw, mangle and filter tables, before kube-proxy's DNAT), nft list ruleset, NetworkPolicies, cloud security groups; allow the port",
                ep.port.unwrap_or_default()
            ),
            evidence,
            confidence,
            blocking: Some(Blocking::new(
                &where_,
                if timed_out > 0 {
                    Action::Dropped
                } else {
                    Action::Rejected
                },
                hit.unwrap_or_else(|| {
                    Resource::new(
                        ResourceKind::Rule,
                        format!(
                            "{}: a rule matching TCP port {}",
                            if dropped_at.is_some() {
                                where_.clone()
                            } else {
                                format!("on the path to {where_} or at it")
                            },
                            ep.port.unwrap_or_default()
                        ),
                    )
                }),
                &drops,
            )),
        });
    }
    None
}

/// A Service with no ready endpoint: its ClusterIP or NodePort refuses
/// (kube-proxy rejects, or has nothing to rewrite to) because the
/// EndpointSlices list no ready backend — the API says so, whatever the
/// node's NAT rules look like.
pub(super) fn no_ready_endpoint(e: &Evidence<'_>) -> Option<Finding> {
    let svc = e.target.service.as_ref()?;
    let (namespace, name) = svc.id.split_once('/')?;
    let service = e.inventory?.service(namespace, name)?;
    // An empty list may only mean the source does not list endpoints (an
    // inventory file): claim only what a listed, unready backend shows.
    if service.endpoints.is_empty() || service.ready_endpoints().next().is_some() {
        return None;
    }
    let (ep, failed) = e
        .hosts()
        .filter(|ep| matches!(ep.role, Role::ClusterIp | Role::Node))
        .find_map(|ep| tcp_failures(e, &ep.host).map(|(_, _, c)| (ep, c)))?;
    let unready: Vec<String> = service
        .endpoints
        .iter()
        .map(|b| format!("{} {}:{}", b.pod, b.ip, b.port))
        .collect();
    let said = if unready.is_empty() {
        format!(
            "Service {} has no endpoints: its selector matches no pod",
            svc.id
        )
    } else {
        format!(
            "Service {} has no ready endpoint: {} not ready",
            svc.id,
            unready.join(", ")
        )
    };
    let evidence = vec![
        cite(failed, &failed.detail),
        listed(
            &e.source.probe,
            said.clone(),
            "endpointslice",
            namespace,
            name,
        ),
    ];
    Some(Finding {
        claims: vec![
            Claim::new(format!("{} is not answered", ep.address()), &[0]),
            Claim::new(said, &[1]),
        ],
        fix: format!(
            "give Service {} a ready backend: kubectl -n {namespace} get endpointslices -l kubernetes.io/service-name={name}, then kubectl -n {namespace} describe pod POD for why it is not ready (readiness probe, crash loop)",
            svc.id
        ),
        evidence,
        confidence: 0.85,
        blocking: Some(Blocking::new(
            &e.source.probe,
            Action::Rejected,
            Resource::new(
                ResourceKind::Listener,
                format!("Service {}: no ready endpoint", svc.id),
            ),
            &[1],
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::fixtures::*;

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
                retransmissions: 2,
                ..fate(
                    Ipv4Addr::new(198, 18, 100, 10),
                    Ipv4Addr::new(198, 18, 0, 12),
                    30080,
                    vec![observer("cloudvm-1", "eth0"), observer("node-2", "eth0")],
                )
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

    /// SYNs to node-2's NodePort reset, with web-0's own capture on: where
    /// the SYNs got decides who sent the RST.
    fn reset_case(reached_pod: bool) -> crate::diagnose::rules::Verdict {
        let pod = observer("node-2", "pod:default/web-0/eth0");
        let mut seen_at = vec![observer("cloudvm-1", "eth0"), observer("node-2", "eth0")];
        if reached_pod {
            seen_at.push(pod.clone());
        }
        reset_seen(seen_at, Some(pod))
    }

    /// SYNs to node-2's NodePort seen at `seen_at` and reset; `pod`: the
    /// backend's capture, when it was armed.
    fn reset_seen(
        seen_at: Vec<ObserverInterface>,
        pod: Option<ObserverInterface>,
    ) -> crate::diagnose::rules::Verdict {
        let mut c = Case::new("cloudvm-1", "nodeport:node-2:30080")
            .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
            .with(tcp("cloudvm-1", "198.18.0.12:30080", 0, 3, 0));
        c.packets = Some(Packets {
            fates: vec![Fate {
                answer: Some(Answer {
                    reset: true,
                    at: observer("cloudvm-1", "eth0"),
                }),
                lost_after: None,
                ..fate(
                    Ipv4Addr::new(198, 18, 100, 10),
                    Ipv4Addr::new(198, 18, 0, 12),
                    30080,
                    seen_at,
                )
            }],
            captured: [observer("cloudvm-1", "eth0"), observer("node-2", "eth0")]
                .into_iter()
                .chain(pod)
                .collect(),
            ..Default::default()
        });
        c.verdict()
    }

    #[tokio::test]
    async fn a_reset_the_destination_never_saw_coming_is_filtered_not_refused() {
        let v = reset_case(false);
        assert_eq!(class(&v), ("port_unreachable", "filtered"), "{v:#?}");
        assert!(v.summary.contains("reset on the way"), "{}", v.summary);
        assert!(
            v.evidence
                .iter()
                .any(|e| e.artifact == "capture node-2/pod:default/web-0/eth0"),
            "{v:#?}"
        );
        // The near miss: the SYNs reach the pod, whose kernel resets them.
        let v = reset_case(true);
        assert_eq!(class(&v), ("port_unreachable", "refused"), "{v:#?}");
        // Without the pod's capture the host's decides: a SYN node-2's
        // NIC never saw was reset on the way.
        let v = reset_seen(vec![observer("cloudvm-1", "eth0")], None);
        assert_eq!(class(&v), ("port_unreachable", "filtered"), "{v:#?}");
        assert_eq!(
            steps(&v),
            [
                (Leg::Forward, "cloudvm-1/eth0", Action::Sent),
                (Leg::Return, "cloudvm-1/eth0", Action::Rejected)
            ],
            "{:#?}",
            v.path
        );
        let v = reset_seen(
            vec![observer("cloudvm-1", "eth0"), observer("node-2", "eth0")],
            None,
        );
        assert_eq!(class(&v), ("port_unreachable", "refused"), "{v:#?}");
    }
}
