//! The diagnosis: a table of rules over the evidence (checks with their
//! raw results, node facts, captured packet fates, the inventory), tried in
//! order; the first that matches gives the verdict. Each rule names the
//! class and cause it proves (DESIGN §1) and the observations it needs, and
//! cites each observation with the probe and the check, facts or capture it
//! comes from. No rule knows what was done to the network: only what was
//! seen.
//!
//! Pure. One module per fault family, each rule with its tests and near
//! misses: [`dns`], [`reachability`], [`port`], [`mtu`], [`cni`],
//! [`degraded`].

use std::net::{IpAddr, Ipv4Addr};

use probemesh_model::inventory::{Cidr, Inventory, PodPhase};
use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;

use super::checks::{self, FAIL, OK, SKIPPED};
use super::packets::{Packets, Proto};
use super::plan::{self, CheckName, SourceSide};
use super::target::{Resolved, Role};

mod cni;
mod degraded;
mod dns;
mod mtu;
mod port;
mod reachability;

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
    pub checks: &'a [pb::Check],
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
    /// One line.
    pub summary: String,
    /// The fix, in the field's words.
    pub fix: String,
    /// Each observation, with where it comes from.
    pub evidence: Vec<pb::Evidence>,
    /// 0..1.
    pub confidence: f64,
}

/// One rule of the table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Its name, reported with the verdict.
    pub name: &'static str,
    /// DESIGN §1 class.
    pub class: &'static str,
    /// DESIGN §1 cause ("" where the class has none).
    pub cause: &'static str,
    /// The observations it needs.
    pub needs: &'static str,
    /// Matches the evidence, or not.
    pub test: fn(&Evidence<'_>) -> Option<Finding>,
}

/// The rules, most specific first.
pub const RULES: &[Rule] = &[
    Rule {
        name: "dns-pod-config",
        class: "dns_failure",
        cause: "pod_dns_config",
        needs: "dns from the source: its resolv.conf servers fail while cluster DNS asked by ClusterIP answers",
        test: dns::dns_pod_config,
    },
    Rule {
        name: "dns-unreachable",
        class: "dns_failure",
        cause: "dns_unreachable",
        needs: "dns from the source: cluster DNS by ClusterIP times out while a DNS pod answers by its own address or the upstream answers; node facts or inventory of the source's node for kube-proxy",
        test: dns::dns_unreachable,
    },
    Rule {
        name: "dns-service-down",
        class: "dns_failure",
        cause: "dns_service_down",
        needs: "dns from the source: cluster DNS by ClusterIP and every DNS pod address fail",
        test: dns::dns_service_down,
    },
    Rule {
        name: "conntrack-full",
        class: "network_unreachable",
        cause: "overload",
        needs: "a failed icmp or tcp_connect; node facts: conntrack table at least 95 % full on a node of the path",
        test: reachability::overload,
    },
    Rule {
        name: "no-route",
        class: "network_unreachable",
        cause: "routing",
        needs: "a failed icmp to a pod; node facts of the source's node: no route to that pod's node CIDR except the default",
        test: reachability::routing,
    },
    Rule {
        name: "overlay-source-mismatch",
        class: "cni_failure",
        cause: "overlay_source_mismatch",
        needs: "a failed check to a pod or Service; captures: tunnel packets with an outer source that is no node's registered address (or node facts: the tunnel device's local address)",
        test: cni::overlay_source_mismatch,
    },
    Rule {
        name: "kube-proxy-rules-missing",
        class: "cni_failure",
        cause: "kube_proxy_rules_missing",
        needs: "tcp_connect to a ClusterIP/NodePort fails; nat_rules on that node empty or kube-proxy not Running there",
        test: cni::kube_proxy_rules_missing,
    },
    Rule {
        name: "mtu-blackhole",
        class: "mtu_blackhole",
        cause: "",
        needs: "icmp ok; icmp_large lost without errors or tcp_transfer stalled after the handshake; pmtu: path MTU below the sender's",
        test: mtu::mtu_blackhole,
    },
    Rule {
        name: "icmp-filtered",
        class: "network_unreachable",
        cause: "firewall",
        needs: "icmp gets no reply while TCP to the same host connects (or captures: echo requests reach the host and are never answered)",
        test: reachability::firewall,
    },
    Rule {
        name: "listen-loopback",
        class: "port_unreachable",
        cause: "loopback_only",
        needs: "tcp_connect fails; listener inside the pod: the port is bound to loopback only",
        test: port::loopback_only,
    },
    Rule {
        name: "connection-refused",
        class: "port_unreachable",
        cause: "refused",
        needs: "icmp ok; tcp_connect refused (RST); listener: nothing on the port (or not checked)",
        test: port::refused,
    },
    Rule {
        name: "port-filtered",
        class: "port_unreachable",
        cause: "filtered",
        needs: "icmp ok; tcp_connect times out, or is reset while the listener is fine",
        test: port::filtered,
    },
    Rule {
        name: "packet-loss",
        class: "degraded",
        cause: "loss",
        needs: "icmp loses some (not all) echoes, or path: loss from a hop to the end",
        test: degraded::loss,
    },
    Rule {
        name: "unreachable",
        class: "network_unreachable",
        cause: "link",
        needs: "icmp and tcp_connect fail; captures: packets leave the source and are never seen further",
        test: reachability::link,
    },
];

/// Applies the rules: the first match, `ok` when every check passed, else
/// `inconclusive` with what is missing.
pub fn diagnose(e: &Evidence<'_>) -> pb::Verdict {
    for rule in RULES {
        if let Some(f) = (rule.test)(e) {
            return pb::Verdict {
                class: rule.class.to_owned(),
                cause: rule.cause.to_owned(),
                summary: f.summary,
                fix: f.fix,
                evidence: f.evidence,
                confidence: f.confidence,
                rule: rule.name.to_owned(),
                missing: e.missing.to_vec(),
            };
        }
    }
    let ran: Vec<&pb::Check> = e.checks.iter().filter(|c| c.status != SKIPPED).collect();
    let failed: Vec<&pb::Check> = ran.iter().copied().filter(|c| c.status == FAIL).collect();
    let source_ran = ran.iter().any(|c| c.from == e.source.spec);
    if failed.is_empty() && source_ran {
        return pb::Verdict {
            class: "ok".into(),
            summary: format!(
                "{} → {}: every check passed ({} checks)",
                e.source.spec,
                e.target.spec,
                ran.len()
            ),
            evidence: ran
                .iter()
                .filter(|c| c.direction != "local")
                .take(6)
                .map(|c| cite(c, &c.detail))
                .collect(),
            confidence: 0.9,
            rule: "all-checks-passed".into(),
            missing: e.missing.to_vec(),
            ..Default::default()
        };
    }
    let mut missing = e.missing.to_vec();
    if !source_ran {
        missing.push(format!(
            "no check could run from {} (see the checks' details)",
            e.source.spec
        ));
    }
    pb::Verdict {
        class: "inconclusive".into(),
        summary: if failed.is_empty() {
            "not enough evidence to decide".into()
        } else {
            format!(
                "{} checks failed, but the evidence fits no known fault",
                failed.len()
            )
        },
        fix: "re-run with every probe on the path connected and captures allowed; the failed checks below are where to look".into(),
        evidence: failed.iter().map(|c| cite(c, &c.detail)).collect(),
        confidence: 0.0,
        rule: "no-rule-matched".into(),
        missing,
        ..Default::default()
    }
}

// ------------------------------------------------------------- helpers

/// Cites a check.
fn cite(c: &pb::Check, observation: &str) -> pb::Evidence {
    pb::Evidence {
        probe: c.from.clone(),
        observation: observation.to_owned(),
        artifact: format!("check {} {} → {}", c.name, c.from, c.to),
    }
}

fn note(probe: &str, observation: String, artifact: impl Into<String>) -> pb::Evidence {
    pb::Evidence {
        probe: probe.to_owned(),
        observation,
        artifact: artifact.into(),
    }
}

impl<'a> Evidence<'a> {
    /// Checks named `name` that ran.
    fn ran(&self, name: CheckName) -> impl Iterator<Item = &'a pb::Check> {
        self.checks
            .iter()
            .filter(move |c| c.name == name.as_str() && c.status != SKIPPED)
    }

    /// Forward checks from the source named `name` aimed at `host`.
    fn aimed(&self, name: CheckName, host: &'a str) -> impl Iterator<Item = &'a pb::Check> {
        let from = self.source.spec.as_str();
        self.ran(name)
            .filter(move |c| c.direction == "forward" && c.from == from && aimed_at(&c.to, host))
    }

    /// Hosts the source aimed at (endpoints with IPs, reachable from it).
    fn hosts(&self) -> impl Iterator<Item = &'a super::target::Endpoint> {
        let from = self.source.spec.as_str();
        let checks = self.checks;
        self.target.endpoints.iter().filter(move |e| {
            checks.iter().any(|c| {
                c.from == from
                    && c.direction == "forward"
                    && c.status != SKIPPED
                    && aimed_at(&c.to, &e.host)
            })
        })
    }

    /// Node facts of `probe`.
    fn facts(&self, probe: &str) -> Option<(&'a pb::Check, &'a pb::NodeFacts)> {
        self.ran(CheckName::NodeFacts)
            .filter(|c| c.from == probe)
            .find_map(|c| Some((c, checks::facts_of(c)?)))
    }
}

/// Whether a check's `to` is `host` (`host`, `host:port`, `host (…)`).
fn aimed_at(to: &str, host: &str) -> bool {
    to.strip_prefix(host)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with(' '))
}

fn ping(c: &pb::Check) -> Option<&pb::PingSummary> {
    match c.result.as_ref()?.outcome.as_ref()? {
        Outcome::Ping(p) => Some(p),
        _ => None,
    }
}

fn tcping(c: &pb::Check) -> Option<&pb::TcpingSummary> {
    match c.result.as_ref()?.outcome.as_ref()? {
        Outcome::Tcping(t) => Some(t),
        _ => None,
    }
}

fn dns(c: &pb::Check) -> Option<&pb::DnsResult> {
    match c.result.as_ref()?.outcome.as_ref()? {
        Outcome::Dns(d) => Some(d),
        _ => None,
    }
}

fn pmtu(c: &pb::Check) -> Option<&pb::PmtuResult> {
    match c.result.as_ref()?.outcome.as_ref()? {
        Outcome::Pmtu(p) => Some(p),
        _ => None,
    }
}

fn listeners(c: &pb::Check) -> Option<&pb::ListenerResult> {
    match c.result.as_ref()?.outcome.as_ref()? {
        Outcome::Listener(l) => Some(l),
        _ => None,
    }
}

fn all_lost(c: &pb::Check) -> bool {
    c.status == FAIL && c.sent > 0 && c.received == 0
}

/// An icmp check that got every reply.
fn icmp_ok(e: &Evidence<'_>, host: &str) -> bool {
    e.aimed(CheckName::Icmp, host).any(|c| c.status == OK)
}

/// TCP to `host` connected at least once.
fn tcp_connected(e: &Evidence<'_>, host: &str) -> Option<&'static str> {
    e.aimed(CheckName::TcpConnect, host)
        .find(|c| c.received > 0)
        .map(|_| "connects")
}

/// The failing TCP checks to `host`: refused and timed-out counts.
fn tcp_failures<'a>(e: &Evidence<'a>, host: &'a str) -> Option<(u32, u32, &'a pb::Check)> {
    let c = e
        .aimed(CheckName::TcpConnect, host)
        .find(|c| c.status == FAIL && c.received == 0)?;
    match tcping(c) {
        Some(t) => Some((t.refused, t.timed_out + t.failed, c)),
        None => {
            let outcome = plan::transfer_of(c).map_or("", |t| t.outcome.as_str());
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
fn unanswered_to(e: &Evidence<'_>, host: &str, proto: Proto) -> Vec<(String, String)> {
    let Some(p) = e.packets else {
        return Vec::new();
    };
    let Ok(ip) = host.parse::<Ipv4Addr>() else {
        return Vec::new();
    };
    p.fates
        .iter()
        .filter(|f| f.proto == proto && f.dst == ip && !f.answered)
        .filter_map(|f| Some((f.describe(), f.lost_after.clone()?)))
        .collect()
}

fn capture_artifact(observer: &str) -> String {
    format!("capture {observer}")
}
