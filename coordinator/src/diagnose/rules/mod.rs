//! The diagnosis: a table of rules over the evidence (checks with their
//! raw results, node facts, captured packet fates, the inventory), tried in
//! order; the first that matches gives the verdict. Each rule names the
//! class and cause it proves (DESIGN §1) and the observations it needs, and
//! cites each observation with the probe and the check, facts or capture it
//! comes from. No rule knows what was done to the network: only what was
//! seen. A finding's summary is a list of claims, each citing the evidence
//! items behind it, so a sentence without evidence cannot be written
//! (`probemesh_model::evidence::unsupported` checks every verdict in tests).
//!
//! Pure. One module per fault family, each rule with its tests and near
//! misses: [`dns`], [`reachability`], [`refusal`], [`port`], [`exhaustion`],
//! [`mtu`], [`cni`], [`degraded`].

use std::net::{IpAddr, Ipv4Addr};

use probemesh_model::check::{CheckName, Direction};
use probemesh_model::evidence::{self, Claim, Item, Source};
use probemesh_model::inventory::{Cidr, Inventory};
use probemesh_model::path::{self as path_step, Step};
use probemesh_model::verdict::{Cause, Class};
use probemesh_proto::pb;

use super::model::{Check, ObserverInterface};
use super::packets::{Packets, Proto};
use super::path::{self, Blocking};
use super::plan::SourceSide;
use super::target::Resolved;

mod cni;
mod degraded;
mod dns;
mod exhaustion;
mod mtu;
mod port;
mod reachability;
mod refusal;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

/// Everything the rules may look at.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// Where the run started.
    pub source: &'a SourceSide,
    /// The target, expanded.
    pub target: &'a Resolved,
    /// Every check, with its raw result.
    pub checks: &'a [Check],
    /// The captures' packet fates, when captures were read.
    pub packets: Option<&'a Packets>,
    /// The cluster inventory.
    pub inventory: Option<&'a Inventory>,
    /// Evidence that could not be gathered.
    pub missing: &'a [String],
}

/// What a matching rule concludes.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The summary, clause by clause, each citing `evidence` by index.
    pub claims: Vec<Claim>,
    /// The fix, in the field's words.
    pub fix: String,
    /// Each observation, with where it comes from.
    pub evidence: Vec<Item>,
    /// 0..1.
    pub confidence: f64,
    /// What blocked the packet, where the evidence names it: the path's
    /// failing step carries it.
    pub blocking: Option<Blocking>,
}

/// One rule of the table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Its name, reported with the verdict (`verdict.rule`): kebab-case and
    /// stable, never a class (`mtu-blackhole` the rule proves
    /// [`Class::MtuBlackhole`]).
    pub name: &'static str,
    /// DESIGN §1 class it proves.
    pub class: Class,
    /// DESIGN §1 cause it proves, where the class has causes.
    pub cause: Option<Cause>,
    /// The observations it needs.
    pub needs: &'static str,
    /// Matches the evidence, or not.
    pub test: fn(&Evidence<'_>) -> Option<Finding>,
}

/// The rules, most specific first. Port exhaustion leads: a source with
/// no free port fails every check it starts (DNS included), so no other
/// rule may explain its failures first.
pub const RULES: &[Rule] = &[
    Rule {
        name: "port-exhaustion",
        class: Class::PortUnreachable,
        cause: Some(Cause::PortExhaustion),
        needs: "tcp_connect from the source fails; node facts of the source: at least 95 % of its ephemeral port range in use",
        test: exhaustion::port_exhaustion,
    },
    Rule {
        name: "dns-pod-config",
        class: Class::DnsFailure,
        cause: Some(Cause::PodDnsConfig),
        needs: "dns from the source: its resolv.conf servers fail while cluster DNS asked by ClusterIP answers",
        test: dns::dns_pod_config,
    },
    Rule {
        name: "dns-unreachable",
        class: Class::DnsFailure,
        cause: Some(Cause::DnsUnreachable),
        needs: "dns from the source: cluster DNS by ClusterIP times out while a DNS pod answers by its own address or the upstream answers; node facts or inventory of the source's node for kube-proxy",
        test: dns::dns_unreachable,
    },
    Rule {
        name: "dns-service-down",
        class: Class::DnsFailure,
        cause: Some(Cause::DnsServiceDown),
        needs: "dns from the source: cluster DNS by ClusterIP and every DNS pod address fail",
        test: dns::dns_service_down,
    },
    Rule {
        name: "dns-answers-wrong",
        class: Class::DnsFailure,
        cause: Some(Cause::DnsServiceDown),
        needs: "dns from the source: the cluster DNS by ClusterIP and every DNS pod answer, but REFUSED, SERVFAIL, or NXDOMAIN for a Service the inventory lists",
        test: dns::dns_wrong_answer,
    },
    Rule {
        name: "conntrack-full",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Overload),
        needs: "a failed icmp or tcp_connect; node facts: conntrack table at least 95 % full on a node of the path",
        test: reachability::overload,
    },
    Rule {
        name: "echo-refused-by-local-rule",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Firewall),
        needs: "icmp from the source gets no reply and its sends fail with EPERM (a local rule)",
        test: refusal::local_rule,
    },
    Rule {
        name: "echo-refused-by-local-route",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Routing),
        needs: "icmp from the source gets no reply and its sends fail with EHOSTUNREACH, ENETUNREACH, EINVAL or EACCES; node facts of the source: its route to the target",
        test: refusal::local_route,
    },
    Rule {
        name: "echo-rejected-by-rule",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Firewall),
        needs: "icmp gets ICMP destination-unreachable errors instead of replies: from a node whose facts show a usable route to the target, or with a policy code (protocol/port unreachable, prohibited)",
        test: refusal::remote_rule,
    },
    Rule {
        name: "echo-refused-by-route",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Routing),
        needs: "icmp gets ICMP errors instead of replies: destination unreachable from a node whose facts show an unreachable, prohibit or blackhole route (or none) to the target, or time exceeded (a loop)",
        test: refusal::remote_route,
    },
    Rule {
        name: "no-route",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Routing),
        needs: "a failed icmp to a pod; node facts of the source's node: no route to that pod's node CIDR except the default",
        test: reachability::routing,
    },
    Rule {
        name: "overlay-source-mismatch",
        class: Class::CniFailure,
        cause: Some(Cause::OverlaySourceMismatch),
        needs: "a failed check to a pod or Service; captures: tunnel packets with an outer source that is no node's registered address (or node facts: the tunnel device's local address)",
        test: cni::overlay_source_mismatch,
    },
    Rule {
        name: "service-no-ready-endpoint",
        class: Class::PortUnreachable,
        cause: Some(Cause::Refused),
        needs: "tcp_connect to a ClusterIP/NodePort fails; the inventory lists the Service's endpoints and none is ready",
        test: port::no_ready_endpoint,
    },
    Rule {
        name: "kube-proxy-rules-missing",
        class: Class::CniFailure,
        cause: Some(Cause::KubeProxyRulesMissing),
        needs: "tcp_connect to a ClusterIP/NodePort fails; nat_rules on that node empty or kube-proxy not Running there",
        test: cni::kube_proxy_rules_missing,
    },
    Rule {
        name: "mtu-blackhole",
        class: Class::MtuBlackhole,
        cause: None,
        needs: "icmp ok; icmp_large lost without errors or tcp_transfer stalled after the handshake; pmtu: path MTU below the sender's",
        test: mtu::mtu_blackhole,
    },
    Rule {
        name: "delivery-link-down",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Link),
        needs: "icmp to a host gets no reply; node facts of its node: the route to it leads to a device without carrier (linkdown) or a dead next hop",
        test: reachability::far_link,
    },
    Rule {
        name: "echo-return-route",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Routing),
        needs: "icmp to a host gets no reply and no error; node facts of the far side: its route back to the source is unreachable, prohibit, blackhole or missing",
        test: refusal::return_path,
    },
    Rule {
        name: "path-mtu-discovery-works",
        class: Class::Ok,
        cause: None,
        needs: "pmtu: frag-needed came back with the path MTU (no black hole); icmp_large refused only with that (frag-needed or EMSGSIZE); small icmp and tcp_transfer ok",
        test: mtu::pmtud_works,
    },
    Rule {
        name: "icmp-filtered",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Firewall),
        needs: "icmp gets no reply while TCP to the same host connects (or captures: echo requests reach the host and are never answered)",
        test: reachability::firewall,
    },
    Rule {
        name: "accept-queue-full",
        class: Class::PortUnreachable,
        cause: Some(Cause::BacklogOverflow),
        needs: "tcp_connect fails; listener: connections wait unaccepted on the port (node facts: listen overflows, when present)",
        test: exhaustion::backlog_overflow,
    },
    Rule {
        name: "listen-loopback",
        class: Class::PortUnreachable,
        cause: Some(Cause::LoopbackOnly),
        needs: "tcp_connect fails; listener inside the pod: the port is bound to loopback only",
        test: port::loopback_only,
    },
    Rule {
        name: "connection-refused",
        class: Class::PortUnreachable,
        cause: Some(Cause::Refused),
        needs: "icmp ok; tcp_connect refused (RST); listener: nothing on the port (or not checked)",
        test: port::refused,
    },
    Rule {
        name: "port-filtered",
        class: Class::PortUnreachable,
        cause: Some(Cause::Filtered),
        needs: "icmp ok; tcp_connect times out, or is reset while the listener is fine",
        test: port::filtered,
    },
    Rule {
        name: "echo-refused",
        class: Class::NetworkUnreachable,
        cause: None,
        needs: "icmp gets host or network unreachable errors from a router that is not a probe: a route or a rule there, undecided",
        test: refusal::remote_undecided,
    },
    Rule {
        name: "packet-loss",
        class: Class::Degraded,
        cause: Some(Cause::Loss),
        needs: "icmp loses some (not all) echoes, or path: loss from a hop to the end",
        test: degraded::loss,
    },
    Rule {
        name: "unreachable",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Link),
        needs: "icmp and tcp_connect fail; captures: packets leave the source and are never seen further",
        test: reachability::link,
    },
];

/// Applies the rules: the first match, `ok` when every check passed, else
/// `inconclusive` with what is missing.
pub fn diagnose(e: &Evidence<'_>) -> Verdict {
    for rule in RULES {
        if let Some(f) = (rule.test)(e) {
            return Verdict {
                class: rule.class,
                cause: rule.cause,
                rule: rule.name,
                summary: evidence::summary(&f.claims),
                claims: f.claims,
                fix: f.fix,
                evidence: f.evidence,
                confidence: f.confidence,
                missing: e.missing.to_vec(),
                path: path::trace(&e.seen(), rule.class != Class::Ok, f.blocking.as_ref()),
            };
        }
    }
    let ran: Vec<&Check> = e.checks.iter().filter(|c| c.ran()).collect();
    let failed: Vec<&Check> = ran.iter().copied().filter(|c| c.failed()).collect();
    let source_ran = ran.iter().any(|c| c.from == e.source.spec);
    if failed.is_empty() && source_ran {
        let evidence: Vec<Item> = ran
            .iter()
            .filter(|c| c.direction != Direction::Local)
            .take(6)
            .map(|c| cite(c, &c.detail))
            .collect();
        let claims = vec![Claim::new(
            format!(
                "{} → {}: every check passed ({} checks)",
                e.source.spec,
                e.target.spec,
                ran.len()
            ),
            &(0..evidence.len()).collect::<Vec<_>>(),
        )];
        return Verdict {
            class: Class::Ok,
            cause: None,
            rule: "all-checks-passed",
            summary: evidence::summary(&claims),
            claims,
            fix: String::new(),
            evidence,
            confidence: 0.9,
            missing: e.missing.to_vec(),
            path: path::trace(&e.seen(), false, None),
        };
    }
    let mut missing = e.missing.to_vec();
    if !source_ran {
        missing.push(format!(
            "no check could run from {} (see the checks' details)",
            e.source.spec
        ));
    }
    let evidence: Vec<Item> = failed.iter().map(|c| cite(c, &c.detail)).collect();
    let claims = if failed.is_empty() {
        Vec::new()
    } else {
        vec![Claim::new(
            format!(
                "{} checks failed, but the evidence fits no known fault",
                failed.len()
            ),
            &(0..evidence.len()).collect::<Vec<_>>(),
        )]
    };
    Verdict {
        class: Class::Inconclusive,
        cause: None,
        rule: "no-rule-matched",
        summary: if claims.is_empty() {
            "not enough evidence to decide".into()
        } else {
            evidence::summary(&claims)
        },
        claims,
        fix: "re-run with every probe on the path connected and captures allowed; the failed checks below are where to look".into(),
        evidence,
        confidence: 0.0,
        path: path::trace(&e.seen(), true, None),
        missing,
    }
}

/// What the diagnosis concludes.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// DESIGN §1 class.
    pub class: Class,
    /// DESIGN §1 cause, where the class has causes.
    pub cause: Option<Cause>,
    /// The rule that decided (a [`Rule`] name, or `all-checks-passed` /
    /// `no-rule-matched`).
    pub rule: &'static str,
    /// One line: the claims joined (or, with no claim, that nothing could
    /// be decided).
    pub summary: String,
    /// The summary clause by clause, each citing `evidence` by index.
    pub claims: Vec<Claim>,
    /// The fix, in the field's words.
    pub fix: String,
    /// Each observation, with where it comes from.
    pub evidence: Vec<Item>,
    /// 0..1.
    pub confidence: f64,
    /// Evidence that could not be gathered, and why.
    pub missing: Vec<String>,
    /// The test packets' way, step by step.
    pub path: Vec<Step>,
}

impl Verdict {
    /// The verdict as the run record carries it.
    pub fn to_pb(&self) -> pb::Verdict {
        pb::Verdict {
            class: pb::VerdictClass::from(self.class).into(),
            cause: self
                .cause
                .map_or(pb::VerdictCause::Unspecified, pb::VerdictCause::from)
                .into(),
            rule: self.rule.to_owned(),
            summary: self.summary.clone(),
            claims: self.claims.iter().map(pb::Claim::from).collect(),
            fix: self.fix.clone(),
            evidence: self.evidence.iter().map(pb::Evidence::from).collect(),
            confidence: self.confidence,
            missing: self.missing.clone(),
            path: self.path.iter().map(pb::PathStep::from).collect(),
            ..Default::default()
        }
    }

    /// Every claim of the verdict without its evidence, judged against the
    /// run's `checks` (empty when all is backed).
    pub fn unsupported(&self, checks: &[Check]) -> Vec<evidence::Unsupported> {
        let sources: Vec<Option<&Source>> = self.evidence.iter().map(|i| Some(&i.source)).collect();
        let ran: Vec<evidence::RunCheck<'_>> = checks
            .iter()
            .map(|c| evidence::RunCheck {
                name: c.name,
                from: &c.from,
                to: &c.to,
                status: c.status,
            })
            .collect();
        let mut found = evidence::unsupported(&evidence::Stated {
            summary: if self.claims.is_empty() {
                ""
            } else {
                &self.summary
            },
            claims: &self.claims,
            sources: &sources,
            checks: &ran,
        });
        found.extend(path_step::unsupported(
            &self.path,
            self.evidence.len(),
            &ran,
        ));
        found
    }
}

// ------------------------------------------------------------- helpers

/// Cites a check.
fn cite(c: &Check, observation: &str) -> Item {
    let source = Source::Check {
        name: c.name,
        from: c.from.clone(),
        to: c.to.clone(),
    };
    Item {
        probe: c.from.clone(),
        observation: observation.to_owned(),
        artifact: source.to_string(),
        source,
    }
}

/// Cites what a capture on `at` saw.
fn seen(at: &ObserverInterface, observation: String) -> Item {
    Item {
        probe: at.probe().to_owned(),
        observation,
        artifact: format!("capture {at}"),
        source: Source::Capture {
            probe: at.probe().to_owned(),
            interface: at.interface.clone(),
            packet: None,
        },
    }
}

/// Cites an inventory object, seen from `probe`'s side.
/// The kube-proxy pod of `node` when it is not running, cited from the
/// inventory: the pod itself when the source names it (its phase, reason and
/// priority class), else the node's entry; with what that says and how to
/// fix it. `probe` is the observer the evidence is filed under.
struct KubeProxyDown {
    item: Item,
    said: String,
    fix: String,
}

fn kube_proxy_down(
    inventory: Option<&Inventory>,
    node: &str,
    probe: &str,
) -> Option<KubeProxyDown> {
    let n = inventory?.node(node)?;
    let kp = n.kube_proxy.as_ref().filter(|kp| kp.is_down())?;
    let said = kp.describe(&n.name);
    let (item, look) = match kp.pod.as_deref().and_then(|p| p.split_once('/')) {
        Some((namespace, name)) => (
            listed(probe, said.clone(), "pod", namespace, name),
            format!("kubectl -n {namespace} describe pod {name}"),
        ),
        None => (
            listed(probe, said.clone(), "node", "", &n.name),
            "kubectl -n kube-system get pods -o wide -l k8s-app=kube-proxy".to_owned(),
        ),
    };
    let priority = if kp.priority_known && kp.priority_class.is_none() {
        "; give the kube-proxy DaemonSet priorityClassName: system-node-critical so the scheduler makes room for it"
    } else {
        ""
    };
    let fix = format!(
        "get kube-proxy running on {} ({look}){priority}; once it runs it writes the node's Service NAT rules",
        n.name
    );
    Some(KubeProxyDown { item, said, fix })
}

fn listed(probe: &str, observation: String, kind: &str, namespace: &str, name: &str) -> Item {
    Item {
        probe: probe.to_owned(),
        observation,
        artifact: "inventory".into(),
        source: Source::Inventory {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        },
    }
}

/// The most specific route for `ip`, with its prefix length.
fn route_for(routes: &[pb::Route], ip: IpAddr) -> Option<(&pb::Route, u8)> {
    routes
        .iter()
        .filter(|r| r.table.is_empty() || r.table == "main")
        .filter_map(|r| {
            let prefix = if r.destination == "default" || r.destination == "0.0.0.0/0" {
                0
            } else {
                let cidr: Cidr = match r.destination.split_once('/') {
                    Some((a, p)) => Cidr::new(a.parse().ok()?, p.parse().ok()?).ok()?,
                    None => Cidr::new(r.destination.parse().ok()?, 32).ok()?,
                };
                if !cidr.contains(ip) {
                    return None;
                }
                cidr.prefix()
            };
            Some((r, prefix))
        })
        .max_by_key(|(_, p)| *p)
}

/// How a node routes `dst`: `Some(route text)` when it refuses it (an
/// unreachable, prohibit or blackhole route, or no route at all), `None`
/// when a usable route carries it. The kernel's own decision (`ip route
/// get`, policy rules included) decides when the facts carry one; the
/// main table's longest match otherwise, and names the route either way.
fn refusing_route(f: &pb::NodeFacts, dst: Ipv4Addr) -> Option<String> {
    let table = match route_for(&f.routes, IpAddr::V4(dst)) {
        None => Some(format!("no route to {dst}")),
        Some((r, _)) => {
            let kind = r.raw.split_whitespace().next().unwrap_or_default();
            ["unreachable", "prohibit", "blackhole", "throw"]
                .contains(&kind)
                .then(|| r.raw.clone())
        }
    };
    let dst = dst.to_string();
    match f.route_decisions.iter().find(|d| d.destination == dst) {
        Some(d)
            if ["blackhole", "unreachable", "prohibit", "no_route"].contains(&d.kind.as_str()) =>
        {
            Some(table.unwrap_or_else(|| format!("ip route get {dst}: {}", d.decision)))
        }
        Some(_) => None,
        None => table,
    }
}

/// The DROP/REJECT rule on `probe` whose counter grew most during the run
/// among those that can match `proto` (`icmp`, `tcp`, `udp`): the facts
/// check and the rule.
fn rule_hit<'a>(
    e: &Evidence<'a>,
    probe: &str,
    proto: &str,
) -> Option<(&'a Check, &'a pb::RuleHits)> {
    let (c, f) = e.facts(probe)?;
    let matches = |rule: &str| {
        let words: Vec<&str> = rule.split_whitespace().collect();
        let named = words
            .windows(2)
            .find(|w| w[0] == "-p" || w[0] == "--protocol")
            .map(|w| w[1]);
        let ports = words.iter().any(|w| w.contains("port"));
        named.is_none_or(|p| p == proto) && !(proto == "icmp" && ports)
    };
    f.rule_hits
        .iter()
        .filter(|h| h.grew_by > 0 && matches(&h.rule))
        .max_by_key(|h| h.grew_by)
        .map(|h| (c, h))
}

/// A rule hit as evidence and as the blocker it names.
fn cite_hit(c: &Check, hit: &pb::RuleHits) -> (Item, path_step::Resource) {
    (
        cite(
            c,
            &format!(
                "{}: {} (table {}) counted {} packets during the run",
                c.from, hit.rule, hit.table, hit.grew_by
            ),
        ),
        path_step::Resource::new(
            path_step::ResourceKind::Rule,
            format!("{}: {} (+{} packets)", c.from, hit.rule, hit.grew_by),
        ),
    )
}

/// The far side's route back to the source, when it refuses it: the facts
/// check of the node behind `ep` (its probe, or its node's), the source
/// address it refuses (the source's own, or the one its packets carried on
/// the wire, e.g. its tunnel address) and the refusing route.
fn return_route<'a>(
    e: &Evidence<'a>,
    ep: &super::target::Endpoint,
) -> Option<(&'a Check, Ipv4Addr, String)> {
    let (fc, f) = far_facts(e, ep)?;
    let mut sources: Vec<Ipv4Addr> = Vec::new();
    if let Some(IpAddr::V4(a)) = e.source.address {
        sources.push(a);
    }
    if let (Some(p), Ok(dst)) = (e.packets, ep.host.parse::<Ipv4Addr>()) {
        sources.extend(p.fates.iter().filter(|f| f.dst == dst).map(|f| f.src));
    }
    sources.into_iter().find_map(|src| {
        let route = refusing_route(f, src).or_else(|| default_only_overlay(e, f, src))?;
        Some((fc, src, route))
    })
}

/// When `addr` is in a node's pod CIDR and only the default route matches
/// it here: overlay traffic that leaves by the underlay's default route is
/// lost (the overlay route is missing on this node).
fn default_only_overlay(e: &Evidence<'_>, f: &pb::NodeFacts, addr: Ipv4Addr) -> Option<String> {
    let (owner, pod_cidr) = e.inventory?.node_owning(IpAddr::V4(addr))?;
    match route_for(&f.routes, IpAddr::V4(addr)) {
        Some((r, 0)) => Some(format!(
            "only the default route matches {addr} ({}'s pod network {}/{}): {}",
            owner.name,
            pod_cidr.addr(),
            pod_cidr.prefix(),
            r.raw
        )),
        _ => None,
    }
}

/// The far side's route to the destination itself, when it leads to a
/// device without carrier (`linkdown`) or a dead next hop: the facts check
/// and the route.
fn dead_delivery<'a>(
    e: &Evidence<'a>,
    ep: &super::target::Endpoint,
) -> Option<(&'a Check, String)> {
    let (fc, f) = far_facts(e, ep)?;
    let (r, _) = route_for(&f.routes, ep.host.parse().ok()?)?;
    r.raw
        .split_whitespace()
        .any(|w| w == "linkdown" || w == "dead")
        .then(|| (fc, r.raw.clone()))
}

/// The probe on the host behind an endpoint: its node's, or its own.
fn far_probe(e: &Evidence<'_>, ep: &super::target::Endpoint) -> Option<String> {
    ep.node
        .as_deref()
        .and_then(|n| e.inventory?.node(n)?.probe.clone())
        .or_else(|| {
            ep.probe
                .as_deref()
                .map(|p| p.split('@').next().unwrap_or(p).to_owned())
        })
}

/// Node facts of the node behind an endpoint (its probe, or its node's).
fn far_facts<'a>(
    e: &Evidence<'a>,
    ep: &super::target::Endpoint,
) -> Option<(&'a Check, &'a pb::NodeFacts)> {
    e.facts(&far_probe(e, ep)?)
}

impl<'a> Evidence<'a> {
    /// Checks named `name` that ran.
    fn seen(&self) -> path::Seen<'a> {
        path::Seen {
            source: self.source,
            checks: self.checks,
            packets: self.packets,
            target: self.target,
            inventory: self.inventory,
        }
    }

    fn ran(&self, name: CheckName) -> impl Iterator<Item = &'a Check> {
        self.checks
            .iter()
            .filter(move |c| c.name == name && c.ran())
    }

    /// Forward checks from the source named `name` aimed at `host`.
    fn aimed(&self, name: CheckName, host: &'a str) -> impl Iterator<Item = &'a Check> {
        let from = self.source.spec.as_str();
        self.ran(name).filter(move |c| {
            c.direction == Direction::Forward && c.from == from && c.aimed_at(host)
        })
    }

    /// Hosts the source aimed at (endpoints with IPs, reachable from it).
    fn hosts(&self) -> impl Iterator<Item = &'a super::target::Endpoint> {
        let from = self.source.spec.as_str();
        let checks = self.checks;
        self.target.endpoints.iter().filter(move |e| {
            checks.iter().any(|c| {
                c.from == from
                    && c.direction == Direction::Forward
                    && c.ran()
                    && c.aimed_at(&e.host)
            })
        })
    }

    /// Node facts of `probe`.
    fn facts(&self, probe: &str) -> Option<(&'a Check, &'a pb::NodeFacts)> {
        self.ran(CheckName::NodeFacts)
            .filter(|c| c.from == probe)
            .find_map(|c| Some((c, c.facts()?)))
    }
}

fn all_lost(c: &Check) -> bool {
    c.failed() && c.sent > 0 && c.received == 0
}

/// An icmp check that got every reply.
fn icmp_ok(e: &Evidence<'_>, host: &str) -> bool {
    e.aimed(CheckName::Icmp, host).any(|c| c.ok())
}

/// TCP to `host` connected at least once.
fn tcp_connected(e: &Evidence<'_>, host: &str) -> Option<&'static str> {
    e.aimed(CheckName::TcpConnect, host)
        .find(|c| c.received > 0)
        .map(|_| "connects")
}

/// The failing TCP checks to `host`: refused and timed-out counts.
fn tcp_failures<'a>(e: &Evidence<'a>, host: &'a str) -> Option<(u32, u32, &'a Check)> {
    let c = e
        .aimed(CheckName::TcpConnect, host)
        .find(|c| c.failed() && c.received == 0)?;
    match c.tcping() {
        Some(t) => Some((t.refused, t.timed_out + t.failed, c)),
        None => {
            let outcome = c.transfer().map_or("", |t| t.outcome.as_str());
            Some((
                u32::from(outcome == "refused" || outcome == "reset"),
                u32::from(outcome != "refused" && outcome != "reset"),
                c,
            ))
        }
    }
}

/// Packets to `host` that were never answered, with where they were last
/// seen: `(described, last seen)`.
fn unanswered_to(e: &Evidence<'_>, host: &str, proto: Proto) -> Vec<(String, ObserverInterface)> {
    let Some(p) = e.packets else {
        return Vec::new();
    };
    let Ok(ip) = host.parse::<Ipv4Addr>() else {
        return Vec::new();
    };
    p.fates
        .iter()
        .filter(|f| f.proto == proto && f.dst == ip && !f.answered())
        .filter_map(|f| Some((f.describe(), f.lost_after.clone()?)))
        .collect()
}
