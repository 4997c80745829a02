//! Echoes refused rather than lost (`network_unreachable`): an ICMP error
//! is an answer — who sent it and its code say what refused the packet —
//! and a send the local stack refuses says so with its errno. Each rule
//! decides only what its evidence tells apart:
//!
//! - the source's own stack refused the echoes: `EPERM` is a local rule
//!   (`firewall`); `EHOSTUNREACH`, `ENETUNREACH`, `EINVAL` (blackhole) and
//!   `EACCES` (prohibit) are its routes (`routing`);
//! - a router or host answered with an ICMP error: when that sender is a
//!   node whose facts we have, its route to the destination decides (an
//!   `unreachable`/`prohibit`/`blackhole` route or none is `routing`; a
//!   usable route means a rule rejected the packet, `firewall`); without
//!   its facts the codes that say policy decide (protocol or port
//!   unreachable for an echo, prohibited: a rule), and for host or network
//!   unreachable the class is certain and the cause is not — said so, with
//!   what would decide.

use std::net::Ipv4Addr;

use probemesh_model::check::{CheckName, Direction};
use probemesh_model::evidence::Claim;
use probemesh_model::path::{Action, Resource, ResourceKind};
use probemesh_packet::icmp::{CODE_FRAG_NEEDED, TYPE_DEST_UNREACHABLE, TYPE_TIME_EXCEEDED};
use probemesh_proto::pb;

use super::{Evidence, Finding, all_lost, cite, cite_hit, refusing_route, return_route, rule_hit};
use crate::diagnose::model::Check;
use crate::diagnose::path::Blocking;

/// ICMP destination unreachable, as the wire's `uint32` carries it.
const DEST_UNREACHABLE: u32 = TYPE_DEST_UNREACHABLE as u32;
/// ICMP time exceeded.
const TIME_EXCEEDED: u32 = TYPE_TIME_EXCEEDED as u32;
/// Destination-unreachable codes that say policy when the sender's tables
/// are not visible: protocol (2) and port (3) unreachable (no router sends
/// them for an echo; `iptables -j REJECT` does) and net, host and
/// administratively prohibited (9, 10, 13).
const POLICY_CODES: [u32; 5] = [2, 3, 9, 10, 13];
/// Fragmentation needed: the MTU rules read it.
const FRAG_NEEDED: u32 = CODE_FRAG_NEEDED as u32;

/// Errnos of a send refused by the sender's routing table.
const ROUTE_ERRNOS: [&str; 4] = ["EHOSTUNREACH", "ENETUNREACH", "EINVAL", "EACCES"];

/// A forward ping from the source that got no reply and whose echoes were
/// answered or refused instead: the check and its summary.
fn refused_ping<'a>(e: &Evidence<'a>) -> Option<(&'a Check, &'a pb::PingSummary)> {
    e.ran(CheckName::Icmp)
        .filter(|c| c.from == e.source.spec && c.direction == Direction::Forward)
        .find_map(|c| {
            let p = c.ping()?;
            (p.received == 0 && p.errors > 0).then_some((c, p))
        })
}

/// The most frequent local errno of a ping, when its sends were refused.
fn local_refusal(p: &pb::PingSummary) -> Option<&pb::LocalErrorCount> {
    p.local_errors.iter().max_by_key(|e| e.count)
}

/// The most frequent ICMP error that is not frag-needed.
fn remote_refusal(p: &pb::PingSummary) -> Option<&pb::IcmpErrorCount> {
    p.icmp_errors
        .iter()
        .filter(|e| !(e.r#type == DEST_UNREACHABLE && e.code == FRAG_NEEDED))
        .max_by_key(|e| e.count)
}

/// The node facts of the node that owns `ip` (any interface address).
fn facts_of_owner<'a>(e: &Evidence<'a>, ip: Ipv4Addr) -> Option<(&'a Check, &'a pb::NodeFacts)> {
    let ip = ip.to_string();
    e.ran(CheckName::NodeFacts).find_map(|c| {
        let f = c.facts()?;
        f.interfaces
            .iter()
            .flat_map(|i| &i.addresses)
            .any(|a| a.split('/').next() == Some(ip.as_str()))
            .then_some((c, f))
    })
}

/// The echo's destination address.
fn destination(p: &pb::PingSummary) -> Option<Ipv4Addr> {
    p.address.parse().ok()
}

pub(super) fn local_rule(e: &Evidence<'_>) -> Option<Finding> {
    let (c, p) = refused_ping(e)?;
    let l = local_refusal(p).filter(|l| l.errno == "EPERM")?;
    let mut evidence = vec![cite(c, &c.detail)];
    let mut blocker = Resource::new(
        ResourceKind::Rule,
        format!("{}: a rule in the OUTPUT path ({})", c.from, l.errno),
    );
    let mut by_rule = vec![0];
    if let Some((fc, hit)) = rule_hit(e, &e.source.probe, "icmp") {
        let (item, named) = cite_hit(fc, hit);
        by_rule.push(evidence.len());
        evidence.push(item);
        blocker = named;
    }
    Some(Finding {
        claims: vec![
            Claim::new(
                format!(
                    "{}'s own stack refuses its echoes to {} ({} of {}: {}, operation not permitted)",
                    c.from, p.address, l.count, p.transmitted, l.errno
                ),
                &[0],
            ),
            Claim::new(
                format!(
                    "a rule in {}'s OUTPUT path drops them before they leave",
                    c.from
                ),
                &by_rule,
            ),
        ],
        fix: format!(
            "on {}: find the rule in the OUTPUT path (iptables -S OUTPUT -v; iptables -t raw -S; iptables -t mangle -S; nft list ruleset) that drops ICMP to {}, and remove or narrow it",
            c.from, p.address
        ),
        evidence,
        confidence: 0.85,
        blocking: Some(Blocking::new(&c.from, Action::Rejected, blocker, &by_rule)),
    })
}

pub(super) fn local_route(e: &Evidence<'_>) -> Option<Finding> {
    let (c, p) = refused_ping(e)?;
    let l = local_refusal(p).filter(|l| ROUTE_ERRNOS.contains(&l.errno.as_str()))?;
    let mut evidence = vec![cite(c, &c.detail)];
    let mut claims = vec![Claim::new(
        format!(
            "{}'s own stack refuses its echoes to {} ({} of {}: {})",
            c.from, p.address, l.count, p.transmitted, l.errno
        ),
        &[0],
    )];
    let route = destination(p).and_then(|dst| {
        let (fc, f) = e.facts(&e.source.probe)?;
        Some((fc, dst, refusing_route(f, dst)?))
    });
    let mut confidence = 0.8;
    let mut blocking = Blocking::new(
        &c.from,
        Action::Rejected,
        Resource::new(
            ResourceKind::Route,
            format!("{}: its route to {} ({})", c.from, p.address, l.errno),
        ),
        &[0],
    );
    if let Some((fc, dst, route)) = route {
        blocking = Blocking::new(
            &c.from,
            Action::Rejected,
            Resource::new(ResourceKind::Route, format!("{}: {route}", c.from)),
            &[evidence.len()],
        );
        claims.push(Claim::new(
            format!("its routing table sends {dst} nowhere: {route}"),
            &[evidence.len()],
        ));
        evidence.push(cite(fc, &format!("the route to {dst}: {route}")));
        confidence = 0.95;
    } else {
        claims.push(Claim::new(
            format!(
                "{} means its route to {} refuses the packet",
                l.errno, p.address
            ),
            &[0],
        ));
    }
    Some(Finding {
        claims,
        fix: format!(
            "on {}: ip route get {} shows the route that refuses it; replace the unreachable/prohibit/blackhole route or restore the missing one (ip route replace {} via GATEWAY)",
            c.from, p.address, p.address
        ),
        evidence,
        confidence,
        blocking: Some(blocking),
    })
}

pub(super) fn return_path(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let Some(lost) = e
            .aimed(CheckName::Icmp, &ep.host)
            .find(|c| all_lost(c) && c.ping().is_some_and(|p| p.errors == 0))
        else {
            continue;
        };
        let Some((fc, src, route)) = return_route(e, ep) else {
            continue;
        };
        let mut evidence = vec![
            cite(lost, &lost.detail),
            cite(fc, &format!("{}'s route to {src}: {route}", fc.from)),
        ];
        let mut back = vec![1];
        if let Some(r) = e
            .ran(CheckName::Icmp)
            .find(|c| c.direction == Direction::Reverse && c.failed() && c.from == fc.from)
        {
            back.push(evidence.len());
            evidence.push(cite(r, &format!("its own pings back fail: {}", r.detail)));
        }
        return Some(Finding {
            claims: vec![
                Claim::new(format!("ICMP echo to {} gets no reply", ep.host), &[0]),
                Claim::new(
                    format!(
                        "{}'s routing table refuses the way back to {src} ({route}), so its replies never leave",
                        fc.from
                    ),
                    &back,
                ),
            ],
            fix: format!(
                "on {}: ip route get {src} shows the route the replies take; restore the route back to {src} (or remove the unreachable/blackhole/prohibit route that shadows it)",
                fc.from
            ),
            evidence,
            confidence: 0.85,
            blocking: Some(
                Blocking::new(
                    &fc.from,
                    Action::Dropped,
                    Resource::new(ResourceKind::Route, format!("{}: {route}", fc.from)),
                    &[1],
                )
                .on_return(),
            ),
        });
    }
    None
}

/// What refused the echoes remotely, as far as the evidence tells.
enum Remote {
    /// A node whose facts show a refusing route (routing).
    Route(String),
    /// A node whose facts show a usable route, or a code that says policy
    /// (firewall).
    Rule(&'static str),
    /// A router looping the packet (time exceeded).
    Loop,
    /// Host or network unreachable from a router whose routes and rules
    /// we cannot see: a route or a reject rule, undecided.
    Undecided,
}

/// Judges the most frequent refusal, with the facts check of its sender
/// when that sender is a node we have facts of.
fn judge_remote<'a>(
    e: &Evidence<'a>,
    err: &pb::IcmpErrorCount,
    dst: Ipv4Addr,
) -> Option<(Remote, Option<&'a Check>)> {
    let from: Ipv4Addr = err.from.parse().ok()?;
    if err.r#type == TIME_EXCEEDED {
        return Some((Remote::Loop, None));
    }
    if err.r#type != DEST_UNREACHABLE {
        return None;
    }
    if let Some((fc, f)) = facts_of_owner(e, from) {
        let judged = match refusing_route(f, dst) {
            Some(route) => Remote::Route(route),
            None => Remote::Rule("its routes carry the destination, so a rule rejected the packet"),
        };
        return Some((judged, Some(fc)));
    }
    let judged = if POLICY_CODES.contains(&err.code) {
        Remote::Rule("the code says policy, not a missing route")
    } else {
        Remote::Undecided
    };
    Some((judged, None))
}

pub(super) fn remote_rule(e: &Evidence<'_>) -> Option<Finding> {
    remote(e, |r| matches!(r, Remote::Rule(_)))
}

pub(super) fn remote_route(e: &Evidence<'_>) -> Option<Finding> {
    remote(e, |r| matches!(r, Remote::Route(_) | Remote::Loop))
}

pub(super) fn remote_undecided(e: &Evidence<'_>) -> Option<Finding> {
    remote(e, |r| matches!(r, Remote::Undecided))
}

/// A remote refusal whose judgement `wanted` accepts.
fn remote(e: &Evidence<'_>, wanted: fn(&Remote) -> bool) -> Option<Finding> {
    let (c, p) = refused_ping(e)?;
    let err = remote_refusal(p)?;
    let dst = destination(p)?;
    let (judged, facts) = judge_remote(e, err, dst)?;
    if !wanted(&judged) {
        return None;
    }
    let mut evidence = vec![cite(c, &c.detail)];
    let mut claims = vec![Claim::new(
        format!(
            "{} answers {}'s echoes to {dst} with ICMP {} ({} of {})",
            err.from, c.from, err.detail, err.count, p.transmitted
        ),
        &[0],
    )];
    if let Some(fc) = facts {
        let said = match &judged {
            Remote::Route(route) => format!("{}'s route to {dst}: {route}", fc.from),
            _ => format!("{}'s routes carry {dst}", fc.from),
        };
        evidence.push(cite(fc, &said));
    }
    let who = facts.map_or_else(|| err.from.clone(), |fc| fc.from.clone());
    let hit = match &judged {
        Remote::Rule(_) => facts.and_then(|fc| rule_hit(e, &fc.from, "icmp")),
        _ => None,
    }
    .map(|(c, hit)| {
        let (item, named) = cite_hit(c, hit);
        evidence.push(item);
        named
    });
    let cited: Vec<usize> = (0..evidence.len()).collect();
    let resource = match &judged {
        Remote::Route(route) => Some(Resource::new(
            ResourceKind::Route,
            format!("{who}: {route}"),
        )),
        Remote::Rule(_) => Some(hit.unwrap_or_else(|| {
            Resource::new(
                ResourceKind::Rule,
                format!("{who}: a reject rule matching ICMP to {dst}"),
            )
        })),
        Remote::Loop => Some(Resource::new(
            ResourceKind::Route,
            format!("{who}: a routing loop towards {dst}"),
        )),
        Remote::Undecided => None,
    };
    let blocking = resource.map(|r| Blocking::new(&who, Action::Rejected, r, &cited));
    let (claim, fix, confidence) = match judged {
        Remote::Route(route) => (
            format!("{who}'s routing table refuses {dst}: {route}"),
            format!(
                "on {who}: ip route get {dst}; replace the route that refuses it ({route}) or restore the missing one"
            ),
            0.9,
        ),
        Remote::Rule(why) => (
            format!("a rule on {who} rejects them: {why}"),
            format!(
                "on {who}: find the REJECT rule that matches ICMP to {dst} (iptables -S -v | grep -i reject; nft list ruleset; firewalld, security groups) and allow echo-request"
            ),
            if facts.is_some() { 0.8 } else { 0.7 },
        ),
        Remote::Loop => (
            format!("the echoes loop until their TTL runs out at {who}: a routing loop"),
            format!(
                "trace the path (mtr -n {dst}): two routers send {dst} to each other; fix the route on {who} or its next hop"
            ),
            0.8,
        ),
        Remote::Undecided => (
            format!(
                "{who} refuses to forward them; whether a route or a reject rule there does it, only {who}'s tables can tell"
            ),
            format!(
                "on {who}: ip route get {dst} (an unreachable route or none) and iptables -S -v | grep -i reject (a rule whose counter grows while you ping)"
            ),
            0.5,
        ),
    };
    claims.push(Claim::new(claim, &cited));
    Some(Finding {
        claims,
        fix,
        evidence,
        confidence,
        blocking,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::model::Observation;
    use crate::diagnose::rules::fixtures::*;

    fn refused(
        from: &str,
        to: &str,
        icmp: Vec<pb::IcmpErrorCount>,
        local: Vec<pb::LocalErrorCount>,
    ) -> Check {
        let errors =
            icmp.iter().map(|e| e.count).sum::<u32>() + local.iter().map(|e| e.count).sum::<u32>();
        run(
            CheckName::Icmp,
            from,
            to,
            Direction::Forward,
            Outcome::Ping(pb::PingSummary {
                address: to.into(),
                transmitted: 20,
                received: 0,
                errors,
                size: 56,
                icmp_errors: icmp,
                local_errors: local,
                ..Default::default()
            }),
        )
    }

    fn icmp_error(from: &str, code: u32, detail: &str) -> pb::IcmpErrorCount {
        pb::IcmpErrorCount {
            from: from.into(),
            r#type: DEST_UNREACHABLE,
            code,
            count: 20,
            detail: detail.into(),
            ..Default::default()
        }
    }

    fn local(errno: &str) -> pb::LocalErrorCount {
        pb::LocalErrorCount {
            errno: errno.into(),
            detail: format!("sending to 198.19.2.10: {errno}"),
            count: 20,
        }
    }

    fn node(name: &str, address: &str, routes: &[(&str, &str)]) -> Check {
        facts(
            name,
            pb::NodeFacts {
                interfaces: vec![pb::Interface {
                    name: "eth0".into(),
                    mtu: 1500,
                    addresses: vec![format!("{address}/24")],
                    up: true,
                }],
                routes: routes
                    .iter()
                    .map(|(dst, raw)| pb::Route {
                        destination: (*dst).into(),
                        raw: (*raw).into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        )
    }

    #[tokio::test]
    async fn a_local_unreachable_route_is_routing_and_names_the_route() {
        let v = Case::new("node-3", "pod:default/web-0")
            .with(refused(
                "node-3",
                "198.19.2.10",
                vec![],
                vec![local("EHOSTUNREACH")],
            ))
            .with(node(
                "node-3",
                "198.18.0.13",
                &[
                    ("default", "default via 198.18.0.1 dev eth0"),
                    ("198.19.2.0/24", "unreachable 198.19.2.0/24"),
                ],
            ))
            .verdict();
        assert_eq!(class(&v), ("network_unreachable", "routing"), "{v:#?}");
        assert_eq!(v.rule, "echo-refused-by-local-route");
        assert!(
            v.summary.contains("unreachable 198.19.2.0/24"),
            "{}",
            v.summary
        );
    }

    #[tokio::test]
    async fn eperm_at_the_sender_is_a_local_rule() {
        let v = Case::new("node-3", "pod:default/web-0")
            .with(refused(
                "node-3",
                "198.19.2.10",
                vec![],
                vec![local("EPERM")],
            ))
            .verdict();
        assert_eq!(class(&v), ("network_unreachable", "firewall"), "{v:#?}");
        assert!(v.summary.contains("OUTPUT"), "{}", v.summary);
    }

    #[tokio::test]
    async fn host_unreachable_from_a_node_with_a_usable_route_is_a_reject_rule() {
        let v = Case::new("cloudvm-1", "probe:node-2")
            .with(refused(
                "cloudvm-1",
                "198.18.0.12",
                vec![icmp_error("198.18.0.12", 1, "Destination Host Unreachable")],
                vec![],
            ))
            .with(node(
                "node-2",
                "198.18.0.12",
                &[("default", "default via 198.18.0.1 dev eth0")],
            ))
            .verdict();
        assert_eq!(class(&v), ("network_unreachable", "firewall"), "{v:#?}");
        assert_eq!(v.rule, "echo-rejected-by-rule");
        assert!(v.summary.contains("a rule on node-2"), "{}", v.summary);
    }

    #[tokio::test]
    async fn host_unreachable_from_a_node_without_a_route_is_routing() {
        let v = Case::new("cloudvm-1", "pod:default/web-0")
            .with(refused(
                "cloudvm-1",
                "198.19.2.10",
                vec![icmp_error("198.18.0.13", 1, "Destination Host Unreachable")],
                vec![],
            ))
            .with(node(
                "node-3",
                "198.18.0.13",
                &[("198.19.2.0/24", "unreachable 198.19.2.0/24")],
            ))
            .verdict();
        assert_eq!(class(&v), ("network_unreachable", "routing"), "{v:#?}");
        assert!(
            v.summary.contains("node-3's routing table"),
            "{}",
            v.summary
        );
    }

    #[tokio::test]
    async fn a_router_we_cannot_see_decides_the_class_not_the_cause() {
        let unreachable = Case::new("cloudvm-1", "probe:node-2")
            .with(refused(
                "cloudvm-1",
                "198.18.0.12",
                vec![icmp_error(
                    "198.18.100.1",
                    1,
                    "Destination Host Unreachable",
                )],
                vec![],
            ))
            .verdict();
        assert_eq!(
            class(&unreachable),
            ("network_unreachable", ""),
            "{unreachable:#?}"
        );
        assert!(
            unreachable
                .summary
                .contains("only 198.18.100.1's tables can tell")
        );
        // Prohibited is policy, whoever sends it.
        let prohibited = Case::new("cloudvm-1", "probe:node-2")
            .with(refused(
                "cloudvm-1",
                "198.18.0.12",
                vec![icmp_error(
                    "198.18.100.1",
                    13,
                    "Communication prohibited by filter",
                )],
                vec![],
            ))
            .verdict();
        assert_eq!(
            class(&prohibited),
            ("network_unreachable", "firewall"),
            "{prohibited:#?}"
        );
        // Without captures the path is the check's: sent, and refused by
        // the router that sent the error, which the rule names.
        assert_eq!(
            steps(&prohibited),
            [
                (Leg::Forward, "cloudvm-1", Action::Sent),
                (Leg::Return, "198.18.100.1", Action::Rejected),
            ]
        );
        assert_eq!(
            prohibited.path[1].resource.as_ref().map(|r| r.kind),
            Some(ResourceKind::Rule)
        );
    }

    #[tokio::test]
    async fn echoes_the_far_side_cannot_answer_are_its_return_route_not_a_firewall() {
        // cloudvm-1 is 198.18.0.14 in the test registry.
        let case = |route: (&str, &str)| {
            let mut c = Case::new("cloudvm-1", "probe:node-2")
                .with(icmp("cloudvm-1", "198.18.0.12", 20, 0))
                .with(node("node-2", "198.18.0.12", &[route]));
            c.packets = Some(Packets {
                fates: vec![fate(
                    Ipv4Addr::new(198, 18, 100, 10),
                    Ipv4Addr::new(198, 18, 0, 12),
                    0,
                    vec![observer("cloudvm-1", "eth0"), observer("node-2", "eth0")],
                )],
                ..Default::default()
            });
            c.verdict()
        };
        let v = case(("198.18.0.14", "blackhole 198.18.0.14"));
        assert_eq!(class(&v), ("network_unreachable", "routing"), "{v:#?}");
        assert_eq!(v.rule, "echo-return-route");
        assert!(
            v.summary
                .contains("the way back to 198.18.0.14 (blackhole 198.18.0.14)"),
            "{}",
            v.summary
        );
        assert_eq!(
            steps(&v),
            [
                (Leg::Forward, "cloudvm-1/eth0", Action::Sent),
                (Leg::Forward, "node-2/eth0", Action::Delivered),
                (Leg::Return, "node-2/eth0", Action::Dropped),
            ],
            "{:#?}",
            v.path
        );
        let blocker = v.path[2]
            .resource
            .as_ref()
            .expect("the failing step names its blocker");
        assert_eq!(
            (blocker.kind, blocker.name.as_str()),
            (ResourceKind::Route, "node-2: blackhole 198.18.0.14")
        );
        // With a usable route back, the unanswered echoes are a firewall.
        let v = case(("default", "default via 198.18.0.1 dev eth0"));
        assert_eq!(class(&v), ("network_unreachable", "firewall"), "{v:#?}");
    }

    #[tokio::test]
    async fn the_kernels_decision_overrules_the_main_table() {
        // node-2's main table routes the way back, but a policy rule sends
        // it to a table whose route refuses it: `ip route get` says so.
        let decided = |kind: &str| {
            let mut far = node(
                "node-2",
                "198.18.0.12",
                &[("default", "default via 198.18.0.1 dev eth0")],
            );
            if let Some(Observation::NodeFacts(f)) = far.observation.as_mut() {
                f.route_decisions = vec![pb::RouteDecision {
                    destination: "198.18.0.14".into(),
                    kind: kind.into(),
                    decision: format!("{kind}: RTNETLINK answers: No route to host"),
                    ..Default::default()
                }];
            }
            Case::new("cloudvm-1", "probe:node-2")
                .with(icmp("cloudvm-1", "198.18.0.12", 20, 0))
                .with(far)
                .verdict()
        };
        let v = decided("unreachable");
        assert_eq!(class(&v), ("network_unreachable", "routing"), "{v:#?}");
        assert!(
            v.summary.contains("ip route get 198.18.0.14: unreachable"),
            "{}",
            v.summary
        );
        // And a kernel that routes it keeps the table's usable route.
        let v = decided("unicast");
        assert_ne!(v.rule, "echo-return-route", "{v:#?}");
    }

    #[tokio::test]
    async fn a_far_side_without_the_overlay_route_back_is_routing() {
        // node-1 pings web-0 through the overlay from its flannel address;
        // node-2 lost its route to node-1's pod network, so only its
        // default route matches the way back.
        let mut c = Case::new("node-1", "pod:default/web-0")
            .with(icmp("node-1", "198.19.2.10", 20, 0))
            .with(node(
                "node-2",
                "198.18.0.12",
                &[("default", "default via 198.18.0.1 dev eth0")],
            ));
        c.packets = Some(Packets {
            fates: vec![fate(
                Ipv4Addr::new(198, 19, 1, 0),
                Ipv4Addr::new(198, 19, 2, 10),
                0,
                vec![
                    observer("node-1", "flannel.1"),
                    observer("node-2", "flannel.1"),
                ],
            )],
            ..Default::default()
        });
        let v = c.verdict();
        assert_eq!(class(&v), ("network_unreachable", "routing"), "{v:#?}");
        assert!(
            v.summary
                .contains("only the default route matches 198.19.1.0"),
            "{}",
            v.summary
        );
    }
}
