//! The diagnosis: a table of rules over the evidence (checks with their
//! raw results, node facts, captured packet fates, the inventory), tried in
//! order; the first that matches gives the verdict. Each rule names the
//! class and cause it proves (DESIGN §1) and the observations it needs, and
//! cites each observation with the probe and the check, facts or capture it
//! comes from. No rule knows what was done to the network: only what was
//! seen.
//!
//! Pure; unit-tested rule by rule below.

use std::net::{IpAddr, Ipv4Addr};

use probemesh_model::inventory::{Cidr, Inventory, PodPhase};
use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;

use super::checks::{self, FAIL, OK, SKIPPED};
use super::packets::{Packets, Proto};
use super::plan::{self, CheckName, SourceSide};
use super::target::{Resolved, Role};

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
        test: dns_pod_config,
    },
    Rule {
        name: "dns-unreachable",
        class: "dns_failure",
        cause: "dns_unreachable",
        needs: "dns from the source: cluster DNS by ClusterIP times out while a DNS pod answers by its own address or the upstream answers; node facts or inventory of the source's node for kube-proxy",
        test: dns_unreachable,
    },
    Rule {
        name: "dns-service-down",
        class: "dns_failure",
        cause: "dns_service_down",
        needs: "dns from the source: cluster DNS by ClusterIP and every DNS pod address fail",
        test: dns_service_down,
    },
    Rule {
        name: "conntrack-full",
        class: "network_unreachable",
        cause: "overload",
        needs: "a failed icmp or tcp_connect; node facts: conntrack table at least 95 % full on a node of the path",
        test: overload,
    },
    Rule {
        name: "no-route",
        class: "network_unreachable",
        cause: "routing",
        needs: "a failed icmp to a pod; node facts of the source's node: no route to that pod's node CIDR except the default",
        test: routing,
    },
    Rule {
        name: "overlay-source-mismatch",
        class: "cni_failure",
        cause: "overlay_source_mismatch",
        needs: "a failed check to a pod or Service; captures: tunnel packets with an outer source that is no node's registered address (or node facts: the tunnel device's local address)",
        test: overlay_source_mismatch,
    },
    Rule {
        name: "kube-proxy-rules-missing",
        class: "cni_failure",
        cause: "kube_proxy_rules_missing",
        needs: "tcp_connect to a ClusterIP/NodePort fails; nat_rules on that node empty or kube-proxy not Running there",
        test: kube_proxy_rules_missing,
    },
    Rule {
        name: "mtu-blackhole",
        class: "mtu_blackhole",
        cause: "",
        needs: "icmp ok; icmp_large lost without errors or tcp_transfer stalled after the handshake; pmtu: path MTU below the sender's",
        test: mtu_blackhole,
    },
    Rule {
        name: "icmp-filtered",
        class: "network_unreachable",
        cause: "firewall",
        needs: "icmp gets no reply while TCP to the same host connects (or captures: echo requests reach the host and are never answered)",
        test: firewall,
    },
    Rule {
        name: "listen-loopback",
        class: "port_unreachable",
        cause: "loopback_only",
        needs: "tcp_connect fails; listener inside the pod: the port is bound to loopback only",
        test: loopback_only,
    },
    Rule {
        name: "connection-refused",
        class: "port_unreachable",
        cause: "refused",
        needs: "icmp ok; tcp_connect refused (RST); listener: nothing on the port (or not checked)",
        test: refused,
    },
    Rule {
        name: "port-filtered",
        class: "port_unreachable",
        cause: "filtered",
        needs: "icmp ok; tcp_connect times out, or is reset while the listener is fine",
        test: filtered,
    },
    Rule {
        name: "packet-loss",
        class: "degraded",
        cause: "loss",
        needs: "icmp loses some (not all) echoes, or path: loss from a hop to the end",
        test: loss,
    },
    Rule {
        name: "unreachable",
        class: "network_unreachable",
        cause: "link",
        needs: "icmp and tcp_connect fail; captures: packets leave the source and are never seen further",
        test: link,
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

// --------------------------------------------------------------- DNS

/// The DNS view of a run: the source's answers, split by who was asked.
struct DnsView<'a> {
    check: &'a pb::Check,
    result: &'a pb::DnsResult,
    cluster_ip: Option<String>,
    pod_ips: Vec<String>,
    upstream: Option<(&'a pb::Check, &'a pb::DnsResult)>,
}

fn dns_view<'a>(e: &Evidence<'a>) -> Option<DnsView<'a>> {
    let name = e.target.name.as_deref()?;
    let check = e
        .ran(CheckName::Dns)
        .find(|c| c.from == e.source.spec && c.to == name)?;
    let result = dns(check)?;
    let service = plan::cluster_dns(e.inventory);
    let upstream = e
        .ran(CheckName::Dns)
        .filter(|c| e.source.pod.is_some() && c.from == e.source.probe)
        .find_map(|c| Some((c, dns(c)?)));
    Some(DnsView {
        check,
        result,
        cluster_ip: service.map(|s| s.cluster_ip.to_string()),
        pod_ips: service
            .map(|s| s.endpoints.iter().map(|e| e.ip.to_string()).collect())
            .unwrap_or_default(),
        upstream,
    })
}

fn resolves(a: &pb::DnsAnswer) -> bool {
    a.rcode == "NOERROR" && !a.answers.is_empty()
}

/// The server sent any DNS answer at all.
fn answered(a: &pb::DnsAnswer) -> bool {
    !matches!(a.rcode.as_str(), "TIMEOUT" | "ERROR" | "")
}

fn server_ip(server: &str) -> &str {
    server
        .rsplit_once(':')
        .filter(|(ip, _)| ip.parse::<Ipv4Addr>().is_ok())
        .map_or(server, |(ip, _)| ip)
}

impl<'a> DnsView<'a> {
    fn resolv_conf_fails(&self) -> bool {
        let mut asked = checks::resolv_conf_answers(self.result).peekable();
        asked.peek().is_some() && !asked.any(resolves)
    }

    /// The answer of server `ip` (asked once, whether it came from
    /// resolv.conf or was named explicitly).
    fn explicit(&self, ip: &str) -> Option<&'a pb::DnsAnswer> {
        self.result
            .answers
            .iter()
            .find(|a| server_ip(&a.server) == ip)
    }

    fn cluster_answer(&self) -> Option<&'a pb::DnsAnswer> {
        self.explicit(self.cluster_ip.as_deref()?)
    }

    fn pod_answers(&self) -> Vec<&'a pb::DnsAnswer> {
        self.pod_ips
            .iter()
            .filter_map(|ip| self.explicit(ip))
            .collect()
    }

    fn upstream_answers(&self) -> Option<&'a pb::DnsAnswer> {
        self.upstream
            .and_then(|(_, d)| d.answers.iter().find(|a| answered(a)))
    }

    fn cite_answer(&self, a: &pb::DnsAnswer, role: &str) -> pb::Evidence {
        let got = if a.answers.is_empty() {
            a.rcode.clone()
        } else {
            format!("{} {}", a.rcode, a.answers.join(" "))
        };
        cite(
            self.check,
            &format!("{role} {} ({}): {got}", a.server, a.source),
        )
    }

    fn cite_resolv_conf(&self) -> Vec<pb::Evidence> {
        checks::resolv_conf_answers(self.result)
            .map(|a| self.cite_answer(a, "resolv.conf server"))
            .collect()
    }

    fn cite_upstream(&self) -> Option<pb::Evidence> {
        let (c, _) = self.upstream?;
        let a = self.upstream_answers()?;
        Some(cite(
            c,
            &format!("upstream DNS {} answers ({})", a.server, a.rcode),
        ))
    }
}

fn dns_pod_config(e: &Evidence<'_>) -> Option<Finding> {
    let v = dns_view(e)?;
    let cluster = v.cluster_answer().filter(|a| resolves(a))?;
    if !v.resolv_conf_fails()
        || v.result
            .resolv_conf_servers
            .iter()
            .any(|s| Some(server_ip(s)) == v.cluster_ip.as_deref())
    {
        return None;
    }
    let servers = v.result.resolv_conf_servers.join(", ");
    let mut evidence = vec![cite(
        v.check,
        &format!(
            "resolv.conf names {servers}, not the cluster DNS {}",
            cluster.server
        ),
    )];
    evidence.extend(v.cite_resolv_conf());
    evidence.push(v.cite_answer(cluster, "cluster DNS"));
    Some(Finding {
        summary: format!(
            "{} cannot resolve {}: its resolv.conf points at {servers}, while the cluster DNS {} answers",
            e.source.spec, v.result.name, cluster.server
        ),
        fix: format!(
            "point the pod's resolv.conf at the cluster DNS {}: check the pod's dnsPolicy/dnsConfig and the kubelet's --cluster-dns (clusterDNS), then recreate the pod",
            v.cluster_ip.unwrap_or_default()
        ),
        evidence,
        confidence: 0.9,
    })
}

fn dns_unreachable(e: &Evidence<'_>) -> Option<Finding> {
    let v = dns_view(e)?;
    let cluster = v.cluster_answer().filter(|a| !answered(a))?;
    if !v.resolv_conf_fails() {
        return None;
    }
    let pods = v.pod_answers();
    let pod_ok: Vec<&pb::DnsAnswer> = pods.iter().copied().filter(|a| answered(a)).collect();
    let upstream = v.cite_upstream();
    // DNS pods asked directly and all silent: the service is down, not unreachable.
    if (!pods.is_empty() && pod_ok.is_empty()) || (pod_ok.is_empty() && upstream.is_none()) {
        return None;
    }
    let mut evidence = vec![v.cite_answer(cluster, "cluster DNS by ClusterIP")];
    evidence.extend(
        pod_ok
            .iter()
            .map(|a| v.cite_answer(a, "DNS pod by its own address")),
    );
    evidence.extend(upstream);
    let node = e
        .source
        .node
        .clone()
        .unwrap_or_else(|| e.source.probe.clone());
    let mut confidence: f64 = 0.75;
    let mut why = "Service NAT for the cluster DNS does not work on this node".to_owned();
    let kube_proxy = e
        .inventory
        .and_then(|i| i.node(&node))
        .map(|n| &n.kube_proxy);
    if let Some(kp) = kube_proxy.filter(|kp| kp.phase != PodPhase::Running) {
        let reason = kp.reason.as_deref().unwrap_or("no reason given");
        evidence.push(note(
            &node,
            format!("kube-proxy on {node} is {:?}: {reason}", kp.phase),
            "inventory",
        ));
        why = format!("kube-proxy on {node} is {:?} ({reason})", kp.phase);
        confidence += 0.1;
    }
    if let Some((c, f)) = e.facts(&e.source.probe)
        && f.nat_paths.is_empty()
    {
        evidence.push(cite(
            c,
            &format!(
                "no NAT rule for {}:53 on {node}: nothing rewrites the ClusterIP",
                v.cluster_ip.clone().unwrap_or_default()
            ),
        ));
        confidence += 0.1;
    }
    Some(Finding {
        summary: format!(
            "{} cannot reach cluster DNS {}: the ClusterIP times out while {}; {why}",
            e.source.spec,
            cluster.server,
            if pod_ok.is_empty() {
                "the upstream DNS answers".to_owned()
            } else {
                format!("the DNS pod {} answers directly", pod_ok[0].server)
            }
        ),
        fix: format!(
            "restore kube-proxy on {node}: kubectl -n kube-system get pods -o wide --field-selector spec.nodeName={node} -l k8s-app=kube-proxy; if it is Pending/evicted give it priorityClassName: system-node-critical and let it start, so the Service NAT rules (KUBE-SERVICES) are written on {node}"
        ),
        evidence,
        confidence: confidence.min(0.95),
    })
}

fn dns_service_down(e: &Evidence<'_>) -> Option<Finding> {
    let v = dns_view(e)?;
    let cluster = v.cluster_answer().filter(|a| !resolves(a))?;
    let pods = v.pod_answers();
    if !v.resolv_conf_fails() || pods.is_empty() || pods.iter().any(|a| resolves(a)) {
        return None;
    }
    let mut evidence = vec![v.cite_answer(cluster, "cluster DNS by ClusterIP")];
    evidence.extend(
        pods.iter()
            .map(|a| v.cite_answer(a, "DNS pod by its own address")),
    );
    evidence.extend(v.cite_upstream());
    Some(Finding {
        summary: format!(
            "the cluster DNS service does not answer: {} and its pods ({}) fail from {}",
            cluster.server,
            pods.iter().map(|a| a.server.as_str()).collect::<Vec<_>>().join(", "),
            e.source.spec
        ),
        fix: "check the cluster DNS pods: kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide, their logs and restarts; they must listen on :53".into(),
        evidence,
        confidence: 0.85,
    })
}

// ------------------------------------------------------- reachability

fn overload(e: &Evidence<'_>) -> Option<Finding> {
    let failing: Vec<&pb::Check> = e
        .checks
        .iter()
        .filter(|c| {
            (c.name == "icmp" || c.name == "tcp_connect") && c.status == FAIL && c.received == 0
        })
        .collect();
    if failing.is_empty() {
        return None;
    }
    let (c, f) = e.ran(CheckName::NodeFacts).find_map(|c| {
        let f = checks::facts_of(c)?;
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
    Some(Finding {
        summary: format!(
            "{}'s conntrack table is full ({}/{}): it drops every new connection, ping included",
            c.from, f.conntrack_count, f.conntrack_max
        ),
        fix: format!(
            "on {}: find what fills it (conntrack -S; conntrack -L | sort by source), then raise net.netfilter.nf_conntrack_max (and the hash size) or shorten timeouts; `dmesg` shows \"nf_conntrack: table full, dropping packet\"",
            c.from
        ),
        evidence,
        confidence: 0.9,
    })
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

fn routing(e: &Evidence<'_>) -> Option<Finding> {
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
        let Some(owner) = inv
            .nodes
            .iter()
            .find(|n| n.name != src_node && n.pod_cidr.contains(ip))
        else {
            continue;
        };
        let best = route_for(&facts.routes, ip);
        let via = match best {
            Some((r, 0)) => format!("only the default route matches: {}", r.raw),
            None => "no route matches at all".to_owned(),
            Some(_) => continue,
        };
        let mut evidence = vec![
            cite(
                facts_check,
                &format!(
                    "{src_node} has no route to {} ({}'s pods): for {ip} {via}",
                    owner.pod_cidr.addr(),
                    owner.name
                ),
            ),
            cite(failed, &failed.detail),
        ];
        if let Some(under) = e
            .ran(CheckName::Icmp)
            .find(|c| c.to == owner.internal_ip.to_string() && c.status == OK)
        {
            evidence.push(cite(
                under,
                &format!("{} itself answers: the nodes reach each other", owner.name),
            ));
        }
        return Some(Finding {
            summary: format!(
                "{src_node} has no route to {}/{} ({}'s pod network): traffic to {ip} leaves by the default route and is lost",
                owner.pod_cidr.addr(),
                owner.pod_cidr.prefix(),
                owner.name
            ),
            fix: format!(
                "restore the overlay route on {src_node} (flannel: ip route replace {}/{} via {} dev flannel.1 onlink, or restart flanneld, which rewrites its routes); check for a stale route sync or a manual `ip route del`",
                owner.pod_cidr.addr(),
                owner.pod_cidr.prefix(),
                owner.pod_cidr.addr()
            ),
            evidence,
            confidence: 0.85,
        });
    }
    None
}

/// Whether something aimed at pods or a Service failed.
fn pod_path_failed(e: &Evidence<'_>) -> bool {
    e.target.endpoints.iter().any(|ep| {
        matches!(ep.role, Role::Backend | Role::Pod | Role::ClusterIp)
            && (e.aimed(CheckName::Icmp, &ep.host).any(all_lost)
                || tcp_failures(e, &ep.host).is_some())
    })
}

fn overlay_source_mismatch(e: &Evidence<'_>) -> Option<Finding> {
    let inv = e.inventory?;
    if !pod_path_failed(e) {
        return None;
    }
    let registered = |ip: Ipv4Addr| inv.nodes.iter().any(|n| n.internal_ip == IpAddr::V4(ip));
    let mut evidence = Vec::new();
    let mut culprit: Option<(String, String, String)> = None;
    if let Some(p) = e.packets {
        let node_ip = |probe: &str| inv.node_of_probe(probe).map(|n| n.internal_ip);
        // A tunnel packet seen where it is not addressed to was seen
        // leaving: that observer's node is the sender.
        let (sent, received): (Vec<_>, Vec<_>) = p
            .tunnels
            .iter()
            .filter(|t| !registered(t.outer_src))
            .partition(|t| node_ip(&t.probe) != Some(IpAddr::V4(t.outer_dst)));
        for t in &sent {
            let expected = node_ip(&t.probe).map_or("?".to_owned(), |ip| ip.to_string());
            evidence.push(note(
                &t.probe,
                format!(
                    "{} packets leave {} with outer source {} ({} packets to {}); {} is registered as {expected}",
                    t.kind.to_uppercase(),
                    t.observer,
                    t.outer_src,
                    t.packets,
                    t.outer_dst,
                    t.probe
                ),
                capture_artifact(&t.observer),
            ));
            culprit.get_or_insert((t.probe.clone(), t.outer_src.to_string(), expected));
        }
        for t in &received {
            evidence.push(note(
                &t.probe,
                format!(
                    "{} receives {} {} packets from {}, which is no node's registered address",
                    t.observer,
                    t.packets,
                    t.kind.to_uppercase(),
                    t.outer_src
                ),
                capture_artifact(&t.observer),
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
            .filter(|f| !f.answered && f.seen_at.len() > 1)
            .filter_map(|f| Some((f, f.lost_after.clone()?)))
            .next();
        if let (Some((f, at)), Some(_)) = (unanswered, &culprit) {
            evidence.push(note(
                at.split('/').next().unwrap_or_default(),
                format!(
                    "{} reaches {at} through the tunnel and is never answered",
                    f.describe()
                ),
                capture_artifact(&at),
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
        .find(|c| c.status == OK && c.detail.contains("node to node"))
    {
        evidence.push(cite(under, "node to node works: the underlay is fine"));
    }
    if let Some(f) = e.facts(&probe).map(|(_, f)| f) {
        for i in f.interfaces.iter().filter(|i| {
            i.addresses
                .iter()
                .filter(|a| a.parse::<Cidr>().is_ok_and(|c| c.addr().is_ipv4()) || a.contains('.'))
                .count()
                > 1
        }) {
            evidence.push(note(
                &probe,
                format!(
                    "{} holds {} addresses: {}",
                    i.name,
                    i.addresses.len(),
                    i.addresses.join(", ")
                ),
                format!("node facts {probe}"),
            ));
        }
    }
    Some(Finding {
        summary: format!(
            "{probe} encapsulates overlay traffic with outer source {wrong} instead of its registered address {right}; the other nodes drop it, so pod and Service traffic from {probe} is never answered"
        ),
        fix: format!(
            "pin the overlay to the registered address: flanneld --iface=eth0 or --public-ip={right} (Calico: IP_AUTODETECTION_METHOD=interface=eth0 / can-reach), or remove the extra address {wrong} (DHCP) from the NIC; then restart the CNI agent on {probe}"
        ),
        evidence,
        confidence,
    })
}

fn kube_proxy_rules_missing(e: &Evidence<'_>) -> Option<Finding> {
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
        let proxy_down = node.filter(|n| n.kube_proxy.phase != PodPhase::Running);
        if rules_missing.is_none() && proxy_down.is_none() {
            continue;
        }
        let mut evidence = vec![cite(failed, &failed.detail)];
        if let Some((c, _)) = rules_missing {
            evidence.push(cite(
                c,
                &format!(
                    "no NAT rule for Service {} port {} on {node_probe}",
                    svc.id, svc.port
                ),
            ));
        }
        if let Some(n) = proxy_down {
            evidence.push(note(
                &node_probe,
                format!(
                    "kube-proxy on {} is {:?}: {}",
                    n.name,
                    n.kube_proxy.phase,
                    n.kube_proxy.reason.as_deref().unwrap_or("no reason given")
                ),
                "inventory",
            ));
        }
        for b in e.hosts().filter(|b| b.role == Role::Backend) {
            if tcp_connected(e, &b.host).is_some() {
                evidence.push(note(
                    &e.source.spec,
                    format!("the backend {} answers directly", b.address()),
                    format!("check tcp_connect {} → {}", e.source.spec, b.address()),
                ));
            }
        }
        return Some(Finding {
            summary: format!(
                "no kube-proxy NAT rules for Service {} on {node_probe}: {} is not rewritten to a backend",
                svc.id,
                ep.address()
            ),
            fix: format!(
                "restore kube-proxy on {node_probe} (kubectl -n kube-system get pods -o wide -l k8s-app=kube-proxy; it must be Running there) so that KUBE-SERVICES holds the Service's rules"
            ),
            evidence,
            confidence: 0.8,
        });
    }
    None
}

fn mtu_blackhole(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let host = ep.host.as_str();
        if !icmp_ok(e, host) {
            continue;
        }
        let large = e
            .aimed(CheckName::IcmpLarge, host)
            .find(|c| all_lost(c) && ping(c).is_some_and(|p| p.errors == 0));
        let stalled = e
            .aimed(CheckName::TcpTransfer, host)
            .find(|c| c.status == FAIL && plan::transfer_of(c).is_some_and(|t| t.connected));
        if large.is_none() && stalled.is_none() {
            continue;
        }
        let search = e
            .aimed(CheckName::Pmtu, host)
            .find_map(|c| Some((c, pmtu(c)?)))
            .filter(|(_, p)| p.blackhole || (p.path_mtu > 0 && p.path_mtu < p.interface_mtu));
        let Some((pc, p)) = search else {
            continue;
        };
        let mut evidence = vec![];
        if let Some(small) = e.aimed(CheckName::Icmp, host).find(|c| c.status == OK) {
            evidence.push(cite(
                small,
                &format!("small packets pass: {}", small.detail),
            ));
        }
        if let Some(c) = large {
            evidence.push(cite(
                c,
                &format!("{}-byte echoes with DF vanish: {}", c.size, c.detail),
            ));
        }
        if let Some(c) =
            tcp_connected(e, host).and_then(|_| e.aimed(CheckName::TcpConnect, host).next())
        {
            evidence.push(cite(c, &format!("the TCP handshake works: {}", c.detail)));
        }
        if let Some(c) = stalled {
            evidence.push(cite(c, &c.detail));
        }
        evidence.push(cite(pc, &pc.detail));
        // Where it shrinks: a node interface at the path MTU.
        let mut shrinks = String::new();
        for c in e.ran(CheckName::NodeFacts) {
            if let Some(f) = checks::facts_of(c)
                && let Some(i) = f
                    .interfaces
                    .iter()
                    .find(|i| i.mtu == p.path_mtu && i.name != "lo")
            {
                evidence.push(cite(
                    c,
                    &format!("{}'s {} has MTU {}", c.from, i.name, i.mtu),
                ));
                if shrinks.is_empty() {
                    shrinks = format!(" (at {}'s {})", c.from, i.name);
                }
            }
        }
        let mut confidence: f64 = 0.85;
        if let Some(pk) = e.packets {
            let big = pk.fates.iter().find(|f| {
                f.wire_bytes > p.path_mtu
                    && !f.answered
                    && f.dst.to_string() == host
                    && f.lost_after.is_some()
            });
            if let Some(f) = big {
                let at = f.lost_after.clone().unwrap_or_default();
                evidence.push(note(
                    at.split('/').next().unwrap_or_default(),
                    format!("{} leaves {} and is never seen further", f.describe(), at),
                    capture_artifact(&at),
                ));
                confidence += 0.1;
            }
        }
        return Some(Finding {
            summary: format!(
                "MTU black hole towards {host}: the path carries {} bytes{shrinks} while {} sends {}-byte packets on {}, and no ICMP frag-needed comes back; small packets and the TCP handshake pass, full-size segments are lost",
                p.path_mtu, e.source.spec, p.interface_mtu, p.interface
            ),
            fix: format!(
                "make the MTUs agree: set {}'s {} MTU to {} (ip link set {} mtu {}) or clamp TCP MSS to the path (iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu); and let ICMP type 3 code 4 (frag-needed) through the firewalls so path MTU discovery works",
                e.source.spec, p.interface, p.path_mtu, p.interface, p.path_mtu
            ),
            evidence,
            confidence: confidence.min(0.95),
        });
    }
    None
}

fn firewall(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let host = ep.host.as_str();
        let Some(lost) = e.aimed(CheckName::Icmp, host).find(|c| all_lost(c)) else {
            continue;
        };
        let tcp = e
            .aimed(CheckName::TcpConnect, host)
            .chain(e.aimed(CheckName::TcpTransfer, host))
            .find(|c| c.received > 0 || c.status == OK);
        let reached = unanswered_to(e, host, Proto::Icmp)
            .into_iter()
            .find(|(_, at)| {
                ep.node.as_deref().is_some_and(|n| at.starts_with(n))
                    || ep.probe.as_deref().is_some_and(|p| at.starts_with(p))
            });
        if tcp.is_none() && reached.is_none() {
            continue;
        }
        let mut evidence = vec![cite(lost, &lost.detail)];
        if let Some(c) = tcp {
            evidence.push(cite(
                c,
                &format!("TCP to the same host works: {}", c.detail),
            ));
        }
        if let Some((what, at)) = &reached {
            evidence.push(note(
                at.split('/').next().unwrap_or_default(),
                format!("{what} reaches {at} and is never answered"),
                capture_artifact(at),
            ));
        }
        if let Some(back) = e.ran(CheckName::Icmp).find(|c| {
            c.direction == "reverse"
                && c.status == OK
                && ep.probe.as_deref() == Some(c.from.as_str())
        }) {
            evidence.push(cite(back, &format!("the other way works: {}", back.detail)));
        }
        let who = ep
            .node
            .clone()
            .or_else(|| ep.probe.clone())
            .unwrap_or_else(|| host.to_owned());
        return Some(Finding {
            summary: format!(
                "ICMP echo to {host} is dropped by a firewall{}: the host is up (TCP connects) but never answers ping",
                if reached.is_some() {
                    format!(" on {who}")
                } else {
                    String::new()
                }
            ),
            fix: format!(
                "on {who}: find the rule dropping ICMP (iptables -S INPUT | grep icmp, nft list ruleset, firewalld, security groups) and allow echo-request; ping is how the next engineer will test this path"
            ),
            evidence,
            confidence: if reached.is_some() { 0.9 } else { 0.75 },
        });
    }
    None
}

fn loopback_only(e: &Evidence<'_>) -> Option<Finding> {
    let c = e.ran(CheckName::Listener).find(|c| {
        listeners(c).is_some_and(|l| {
            let tcp: Vec<_> = l
                .listeners
                .iter()
                .filter(|x| x.protocol.starts_with("tcp"))
                .collect();
            !tcp.is_empty() && tcp.iter().all(|x| checks::is_loopback(&x.address))
        })
    })?;
    let failed: Vec<&pb::Check> = e
        .hosts()
        .filter_map(|ep| tcp_failures(e, &ep.host).map(|(_, _, c)| c))
        .collect();
    if failed.is_empty() {
        return None;
    }
    let l = listeners(c)?;
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
    Some(Finding {
        summary: format!(
            "the app in {} listens on {} only: connections from other hosts are refused",
            c.from.split("@pod:").nth(1).unwrap_or(&c.from),
            bound.join(", ")
        ),
        fix: "make the app bind 0.0.0.0 (or the pod IP) instead of 127.0.0.1: its listen/host setting (e.g. --host 0.0.0.0), then restart it".into(),
        evidence,
        confidence: 0.9,
    })
}

fn refused(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let Some((refused, _, failed)) = tcp_failures(e, &ep.host) else {
            continue;
        };
        if refused == 0 {
            continue;
        }
        let listener = e
            .ran(CheckName::Listener)
            .find(|c| c.status == FAIL && listeners(c).is_some_and(|l| l.listeners.is_empty()));
        let listening = e.ran(CheckName::Listener).any(|c| c.status == OK);
        if listening {
            continue;
        }
        let mut evidence = vec![cite(failed, &failed.detail)];
        let alive = e
            .ran(CheckName::Icmp)
            .find(|c| c.status == OK && c.direction == "forward" && c.from == e.source.spec);
        if let Some(c) = alive {
            evidence.push(cite(c, &format!("the host is up: {}", c.detail)));
        }
        let mut confidence: f64 = 0.75;
        if let Some(c) = listener {
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
        return Some(Finding {
            summary: format!(
                "connection refused: nothing listens on port {port}{}; the kernel answers SYNs with RST",
                listener.map_or(String::new(), |c| format!(
                    " in {}",
                    c.from.split("@pod:").nth(1).unwrap_or(&c.from)
                ))
            ),
            fix: format!(
                "start the application (is the container running? kubectl get pod, kubectl logs --previous) and check that it listens on {port}, the Service's targetPort"
            ),
            evidence,
            confidence,
        });
    }
    None
}

fn filtered(e: &Evidence<'_>) -> Option<Finding> {
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
        let listening = e.ran(CheckName::Listener).any(|c| c.status == OK);
        if timed_out == 0 && !(refused > 0 && listening) {
            continue;
        }
        let mut evidence = vec![cite(failed, &failed.detail)];
        if let Some(c) = e.aimed(CheckName::Icmp, host).find(|c| c.status == OK) {
            evidence.push(cite(c, &format!("the host answers ping: {}", c.detail)));
        }
        if let Some(c) = e.ran(CheckName::Listener).find(|c| c.status == OK) {
            evidence.push(cite(c, &format!("the app listens: {}", c.detail)));
        }
        let dropped_at = unanswered_to(e, host, Proto::Tcp).into_iter().next();
        let mut confidence = 0.8;
        if let Some((what, at)) = &dropped_at {
            evidence.push(note(
                at.split('/').next().unwrap_or_default(),
                format!("{what} reaches {at} and is never answered"),
                capture_artifact(at),
            ));
            confidence = 0.9;
        }
        let where_ = dropped_at
            .as_ref()
            .map(|(_, at)| at.split('/').next().unwrap_or_default().to_owned())
            .or_else(|| ep.node.clone())
            .unwrap_or_else(|| host.to_owned());
        let how = if timed_out > 0 {
            "SYNs get no answer at all (no SYN-ACK, no RST)"
        } else {
            "the connection is reset although the app listens: a RST the destination never sent"
        };
        return Some(Finding {
            summary: format!(
                "TCP to {} is filtered: the host is up and {how}; a rule drops it{}",
                ep.address(),
                if dropped_at.is_some() {
                    format!(" on {where_}")
                } else {
                    " on the path or at the destination".to_owned()
                }
            ),
            fix: format!(
                "find the rule on {where_}: iptables-save | grep -n {} (raw, mangle and filter tables, before kube-proxy's DNAT), nft list ruleset, NetworkPolicies, cloud security groups; allow the port",
                ep.port.unwrap_or_default()
            ),
            evidence,
            confidence,
        });
    }
    None
}

fn loss(e: &Evidence<'_>) -> Option<Finding> {
    let lossy: Vec<&pb::Check> = e
        .ran(CheckName::Icmp)
        .filter(|c| c.received > 0 && c.received < c.sent)
        .collect();
    let path = e.ran(CheckName::Path).find(|c| {
        matches!(c.result.as_ref().and_then(|r| r.outcome.as_ref()), Some(Outcome::Trace(t)) if t.loss_from_hop > 0)
    });
    if lossy.is_empty() && path.is_none() {
        return None;
    }
    let mut evidence: Vec<pb::Evidence> = lossy.iter().map(|c| cite(c, &c.detail)).collect();
    let mut at = String::new();
    if let Some(c) = path
        && let Some(Outcome::Trace(t)) = c.result.as_ref().and_then(|r| r.outcome.as_ref())
    {
        let hop = t
            .hops
            .iter()
            .find(|h| h.ttl == t.loss_from_hop)
            .map_or("?", |h| h.host.as_str());
        at = format!(" from hop {} ({hop}) on", t.loss_from_hop);
        evidence.push(cite(
            c,
            &format!(
                "loss starts at hop {} ({hop}) and continues to the end: {}",
                t.loss_from_hop,
                t.reading.join("; ")
            ),
        ));
    }
    let worst = lossy
        .iter()
        .map(|c| (c.sent - c.received, c.sent))
        .max_by(|a, b| {
            (f64::from(a.0) / f64::from(a.1.max(1)))
                .total_cmp(&(f64::from(b.0) / f64::from(b.1.max(1))))
        });
    let rate = worst.map_or(String::new(), |(l, s)| format!(" ({l} of {s} lost)",));
    Some(Finding {
        summary: format!(
            "the path works but loses packets{rate}{at}: {} → {}",
            e.source.spec, e.target.spec
        ),
        fix: "look where loss starts (the path check): that hop's interface drops and queues (ip -s link, tc -s qdisc, ethtool -S), its load, and any policer or rule dropping at random".into(),
        evidence,
        confidence: if path.is_some() { 0.85 } else { 0.7 },
    })
}

fn link(e: &Evidence<'_>) -> Option<Finding> {
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
            .find(|(_, at)| at.starts_with(&e.source.probe));
        let trace = e.aimed(CheckName::Path, host).next();
        if leaves.is_none() && trace.is_none() {
            continue;
        }
        let mut evidence = vec![cite(lost, &lost.detail)];
        if let Some((what, at)) = &leaves {
            evidence.push(note(
                &e.source.probe,
                format!("{what} leaves {at} and no observer sees it again"),
                capture_artifact(at),
            ));
        }
        if let Some(t) = trace {
            evidence.push(cite(t, &t.detail));
        }
        return Some(Finding {
            summary: format!("{host} is unreachable from {}: packets leave and never arrive", e.source.spec),
            fix: "follow the path check's last answering hop: check that hop's link, routes and firewall towards the target".into(),
            evidence,
            confidence: if leaves.is_some() { 0.7 } else { 0.5 },
        });
    }
    None
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
