//! DNS rules (`dns_failure`): who was asked, who answered — the pod's
//! resolv.conf servers, the cluster DNS by ClusterIP, its pods by their own
//! addresses, the upstream.

use std::net::Ipv4Addr;

use probemesh_model::check::CheckName;
use probemesh_model::evidence::Claim;
use probemesh_model::inventory::Service;
use probemesh_model::path::{Action, Resource, ResourceKind};
use probemesh_proto::pb;

use super::{Evidence, Finding, Item, cite, listed};
use crate::diagnose::model::Check;
use crate::diagnose::path::Blocking;
use crate::diagnose::{checks, plan};

/// The DNS view of a run: the source's answers, split by who was asked.
struct DnsView<'a> {
    check: &'a Check,
    result: &'a pb::DnsResult,
    cluster_ip: Option<String>,
    pod_ips: Vec<String>,
    upstream: Option<(&'a Check, &'a pb::DnsResult)>,
}

fn dns_view<'a>(e: &Evidence<'a>) -> Option<DnsView<'a>> {
    let name = e.target.name.as_deref()?;
    let check = e
        .ran(CheckName::Dns)
        .find(|c| c.from == e.source.spec && c.to == name)?;
    let result = check.dns()?;
    let service = plan::cluster_dns(e.inventory);
    let upstream = e
        .ran(CheckName::Dns)
        .filter(|c| e.source.pod.is_some() && c.from == e.source.probe)
        .find_map(|c| Some((c, c.dns()?)));
    Some(DnsView {
        check,
        result,
        cluster_ip: service.map(|s| s.cluster_ip.to_string()),
        pod_ips: service
            .map(|s| s.ready_endpoints().map(|e| e.ip.to_string()).collect())
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

    fn cite_answer(&self, a: &pb::DnsAnswer, role: &str) -> Item {
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

    fn cite_resolv_conf(&self) -> Vec<Item> {
        checks::resolv_conf_answers(self.result)
            .map(|a| self.cite_answer(a, "resolv.conf server"))
            .collect()
    }

    fn cite_upstream(&self) -> Option<Item> {
        let (c, _) = self.upstream?;
        let a = self.upstream_answers()?;
        Some(cite(
            c,
            &format!("upstream DNS {} answers ({})", a.server, a.rcode),
        ))
    }
}

pub(super) fn dns_pod_config(e: &Evidence<'_>) -> Option<Finding> {
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
    let fails: Vec<usize> = (0..evidence.len()).collect();
    let answers = evidence.len();
    evidence.push(v.cite_answer(cluster, "cluster DNS"));
    // Where the resolv.conf comes from, when the inventory says: the pod's
    // spec.dnsPolicy and spec.dnsConfig.
    let spec = e.source.pod.as_ref().and_then(|(namespace, name)| {
        let dns = e.inventory?.pod(namespace, name)?.dns.as_ref()?;
        let mut said = format!("pod {namespace}/{name} has dnsPolicy {}", dns.policy);
        if !dns.nameservers.is_empty() {
            said.push_str(&format!(
                " and dnsConfig.nameservers {}",
                dns.nameservers.join(", ")
            ));
        }
        let own = dns.nameservers.iter().any(|n| {
            v.result
                .resolv_conf_servers
                .iter()
                .any(|s| server_ip(s) == n.as_str())
        });
        Some((
            listed(&e.source.probe, said, "pod", namespace, name),
            own,
            namespace,
            name,
        ))
    });
    let mut fix = format!(
        "point the pod's resolv.conf at the cluster DNS {}: check the pod's dnsPolicy/dnsConfig and the kubelet's --cluster-dns (clusterDNS), then recreate the pod",
        v.cluster_ip.clone().unwrap_or_default()
    );
    let mut claims = vec![
        Claim::new(
            format!(
                "{} cannot resolve {}: its resolv.conf points at {servers}",
                e.source.spec, v.result.name
            ),
            &fails,
        ),
        Claim::new(
            format!("the cluster DNS {} answers", cluster.server),
            &[answers],
        ),
    ];
    if let Some((item, own, namespace, name)) = spec {
        let at = evidence.len();
        evidence.push(item);
        if own {
            claims.push(Claim::new(
                "the pod's own DNS settings (spec.dnsConfig) name those servers".to_owned(),
                &[at],
            ));
            fix = format!(
                "fix spec.dnsPolicy/spec.dnsConfig of pod {namespace}/{name} (or its workload's template) to use the cluster DNS {} (dnsPolicy: ClusterFirst, no dnsConfig.nameservers), then recreate the pod",
                v.cluster_ip.clone().unwrap_or_default()
            );
        }
    }
    Some(Finding {
        claims,
        fix,
        evidence,
        confidence: 0.9,
        blocking: Some(Blocking::new(
            &e.source.spec,
            Action::Dropped,
            Resource::new(
                ResourceKind::Resolver,
                format!("{}: resolv.conf nameserver {servers}", e.source.spec),
            ),
            &[0],
        )),
    })
}

/// A listener check in a cluster DNS pod that found its server bound to
/// port 53: the service runs, whatever its clients see.
fn dns_server_runs<'a>(e: &Evidence<'a>) -> Option<&'a Check> {
    e.ran(CheckName::Listener).find(|c| {
        c.to == ":53"
            && c.ok()
            && c.listeners()
                .is_some_and(|l| l.listeners.iter().any(|s| s.port == 53))
    })
}

pub(super) fn dns_unreachable(e: &Evidence<'_>) -> Option<Finding> {
    let v = dns_view(e)?;
    let cluster = v.cluster_answer().filter(|a| !answered(a))?;
    if !v.resolv_conf_fails() {
        return None;
    }
    let pods = v.pod_answers();
    let pod_ok: Vec<&pb::DnsAnswer> = pods.iter().copied().filter(|a| answered(a)).collect();
    let upstream = v.cite_upstream();
    // DNS pods asked directly and all silent: the service is down, not
    // unreachable — unless its pod shows the server listening.
    let server_runs = dns_server_runs(e);
    if (!pods.is_empty() && pod_ok.is_empty() && server_runs.is_none())
        || (pod_ok.is_empty() && upstream.is_none())
    {
        return None;
    }
    let mut evidence = vec![v.cite_answer(cluster, "cluster DNS by ClusterIP")];
    evidence.extend(
        pod_ok
            .iter()
            .map(|a| v.cite_answer(a, "DNS pod by its own address")),
    );
    let others: Vec<usize> = (1..evidence.len() + usize::from(upstream.is_some())).collect();
    evidence.extend(upstream);
    let mut because = vec![0];
    let node = e
        .source
        .node
        .clone()
        .unwrap_or_else(|| e.source.probe.clone());
    let mut confidence: f64 = 0.75;
    let mut why = "Service NAT for the cluster DNS does not work on this node".to_owned();
    let cluster_ip = v.cluster_ip.clone().unwrap_or_default();
    let mut blocker = Resource::new(
        ResourceKind::NatChain,
        format!("{node}: the Service NAT for {cluster_ip}:53"),
    );
    let dispatch = checks::service_dispatch(e.facts(&e.source.probe).map(|(_, f)| f));
    let mut fix = format!(
        "restore kube-proxy on {node} (kubectl -n kube-system get pods -o wide -l k8s-app=kube-proxy: a Pending one has no node yet) so that it writes the Service NAT rules ({dispatch}) on {node}"
    );
    // The pods silent by their own address too, while their server
    // listens: the queries are lost on the way, not in Service NAT.
    if let (true, Some(l)) = (pod_ok.is_empty(), server_runs) {
        because = vec![evidence.len()];
        evidence.push(cite(l, &format!("the DNS server listens: {}", l.detail)));
        evidence.extend(
            pods.iter()
                .map(|a| v.cite_answer(a, "DNS pod by its own address")),
        );
        because.extend(evidence.len() - pods.len()..evidence.len());
        why = format!(
            "the DNS server in {} listens on :53, yet its own address does not answer either: the queries are dropped on the way to it",
            l.place()
        );
        blocker = Resource::new(
            ResourceKind::Rule,
            format!(
                "a rule dropping DNS between {} and {}",
                e.source.spec,
                l.place()
            ),
        );
        fix = format!(
            "find what drops DNS between {} and the DNS pods: NetworkPolicies (kubectl get networkpolicy -A), iptables on the DNS pods' node and inside the pod (iptables -S | grep 53), security groups",
            e.source.spec
        );
    }
    if let Some(down) = super::kube_proxy_down(e.inventory, &node, &node) {
        because = vec![evidence.len()];
        evidence.push(down.item);
        why = down.said;
        fix = format!("{} ({dispatch})", down.fix);
        confidence += 0.1;
    }
    if let Some((c, f)) = e.facts(&e.source.probe)
        && f.nat_paths.is_empty()
    {
        because.push(evidence.len());
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
        claims: vec![
            Claim::new(
                format!(
                    "{} cannot reach cluster DNS {}: the ClusterIP times out",
                    e.source.spec, cluster.server,
                ),
                &[0],
            ),
            Claim::new(
                if pod_ok.is_empty() {
                    "the upstream DNS answers".to_owned()
                } else {
                    format!("the DNS pod {} answers directly", pod_ok[0].server)
                },
                &others,
            ),
            Claim::new(why, &because),
        ],
        fix,
        evidence,
        confidence: confidence.min(0.95),
        blocking: Some(Blocking::new(&node, Action::Dropped, blocker, &because)),
    })
}

pub(super) fn dns_service_down(e: &Evidence<'_>) -> Option<Finding> {
    let v = dns_view(e)?;
    let cluster = v.cluster_answer().filter(|a| !resolves(a))?;
    let pods = v.pod_answers();
    if !v.resolv_conf_fails()
        || pods.is_empty()
        || pods.iter().any(|a| resolves(a))
        || dns_server_runs(e).is_some()
    {
        return None;
    }
    let mut evidence = vec![v.cite_answer(cluster, "cluster DNS by ClusterIP")];
    evidence.extend(
        pods.iter()
            .map(|a| v.cite_answer(a, "DNS pod by its own address")),
    );
    let all: Vec<usize> = (0..evidence.len()).collect();
    evidence.extend(v.cite_upstream());
    Some(Finding {
        claims: vec![Claim::new(
            format!(
                "the cluster DNS service does not answer: {} and its pods ({}) fail from {}",
                cluster.server,
                pods.iter().map(|a| a.server.as_str()).collect::<Vec<_>>().join(", "),
                e.source.spec
            ),
            &all,
        )],
        fix: "check the cluster DNS pods: kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide, their logs and restarts; they must listen on :53".into(),
        evidence,
        confidence: 0.85,
        blocking: Some(Blocking::new(
            cluster.server.clone(),
            Action::Dropped,
            Resource::new(
                ResourceKind::Listener,
                format!("the cluster DNS {} and its pods: no answer on :53", cluster.server),
            ),
            &all,
        )),
    })
}

/// Response codes of a server that will not or cannot serve a name.
const NOT_SERVED: [&str; 3] = ["REFUSED", "SERVFAIL", "NXDOMAIN"];

/// The Service a cluster name stands for (`NAME.NS.svc.cluster.local`),
/// when the inventory lists it.
fn service_named<'a>(e: &Evidence<'a>, name: &str) -> Option<&'a Service> {
    let rest = name
        .trim_end_matches('.')
        .strip_suffix(".svc.cluster.local")?;
    let (service, namespace) = rest.split_once('.')?;
    e.inventory?.service(namespace, service)
}

pub(super) fn dns_wrong_answer(e: &Evidence<'_>) -> Option<Finding> {
    let v = dns_view(e)?;
    let not_served = |a: &&pb::DnsAnswer| NOT_SERVED.contains(&a.rcode.as_str());
    let cluster = v.cluster_answer().filter(not_served)?;
    let pods = v.pod_answers();
    if !v.resolv_conf_fails() || pods.is_empty() || !pods.iter().all(not_served) {
        return None;
    }
    let name = v.result.name.as_str();
    let service = service_named(e, name);
    // NXDOMAIN is the right answer for a name the cluster lacks: only a
    // name it has makes it wrong.
    let only_nxdomain = std::iter::once(&cluster)
        .chain(&pods)
        .all(|a| a.rcode == "NXDOMAIN");
    if only_nxdomain && service.is_none() {
        return None;
    }
    let mut evidence = vec![v.cite_answer(cluster, "cluster DNS by ClusterIP")];
    evidence.extend(
        pods.iter()
            .map(|a| v.cite_answer(a, "DNS pod by its own address")),
    );
    let answers: Vec<usize> = (0..evidence.len()).collect();
    let mut rcodes: Vec<&str> = std::iter::once(&cluster)
        .chain(&pods)
        .map(|a| a.rcode.as_str())
        .collect();
    rcodes.dedup();
    let rcodes = rcodes.join("/");
    let mut claims = vec![Claim::new(
        format!(
            "the cluster DNS is reached and answers {name} with {rcodes}: {} and its pods ({})",
            cluster.server,
            pods.iter()
                .map(|a| a.server.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &answers,
    )];
    if let Some(s) = service {
        let known = evidence.len();
        evidence.push(listed(
            &e.source.probe,
            format!(
                "the cluster has Service {}/{} ({})",
                s.namespace, s.name, s.cluster_ip
            ),
            "service",
            &s.namespace,
            &s.name,
        ));
        claims.push(Claim::new(
            format!(
                "{name} is the cluster's Service {}/{}: the DNS service does not serve the cluster's names",
                s.namespace, s.name
            ),
            &[known],
        ));
    } else {
        claims.push(Claim::new(
            "a DNS server that refuses or fails every query serves no zone: the DNS service is down in all but its socket",
            &answers,
        ));
    }
    let cited: Vec<usize> = (0..evidence.len()).collect();
    Some(Finding {
        claims,
        fix: "the cluster DNS answers but does not serve cluster.local: check its configuration (CoreDNS: kubectl -n kube-system get configmap coredns -o yaml, the kubernetes plugin for cluster.local), its logs (kubectl -n kube-system logs -l k8s-app=kube-dns) and whether it reaches the API server (it answers SERVFAIL or REFUSED until it has synced)".into(),
        evidence,
        confidence: if service.is_some() { 0.9 } else { 0.8 },
        blocking: Some(Blocking::new(
            cluster.server.clone(),
            Action::Rejected,
            Resource::new(
                ResourceKind::Resolver,
                format!("the cluster DNS {}: {rcodes} for {name}", cluster.server),
            ),
            &cited,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::fixtures::dns;
    use crate::diagnose::rules::fixtures::*;

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
        if let Some(kp) = c
            .inventory
            .nodes
            .iter_mut()
            .find(|n| n.name == "node-3")
            .and_then(|n| n.kube_proxy.as_mut())
        {
            kp.phase = probemesh_model::inventory::PodPhase::Pending;
            kp.reason = Some("Evicted".into());
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
    async fn a_dns_that_refuses_or_denies_the_clusters_names_is_down_in_all_but_its_socket() {
        let case = |name: &str, rcode: &str| {
            Case::new(CLIENT, &format!("dns:{name}"))
                .with(dns_named(
                    CLIENT,
                    name,
                    "198.18.200.10",
                    vec![
                        answer("198.18.200.10:53", "resolv.conf", rcode, &[]),
                        answer("198.19.1.53:53", "explicit", rcode, &[]),
                    ],
                ))
                .with(listening(
                    "node-1@pod:kube-system/dns-0",
                    53,
                    vec![socket("0.0.0.0", 53, 0)],
                ))
                .with(upstream(true))
                .verdict()
        };
        for rcode in ["REFUSED", "NXDOMAIN"] {
            let v = case("web.default.svc.cluster.local", rcode);
            assert_eq!(class(&v), ("dns_failure", "dns_service_down"), "{v:#?}");
            assert_eq!(v.rule, "dns-answers-wrong");
            assert!(
                v.summary.contains(&format!(
                    "answers web.default.svc.cluster.local with {rcode}"
                )) && v.summary.contains("the cluster's Service default/web"),
                "{}",
                v.summary
            );
            let blocker = v
                .path
                .iter()
                .find_map(|s| s.resource.as_ref())
                .expect("blocker");
            assert_eq!(
                blocker.name,
                format!(
                    "the cluster DNS 198.18.200.10:53: {rcode} for web.default.svc.cluster.local"
                )
            );
        }
        // No such Service: NXDOMAIN is the right answer, not a fault of the DNS.
        let v = case("nope.default.svc.cluster.local", "NXDOMAIN");
        assert_ne!(v.rule, "dns-answers-wrong", "{v:#?}");
        // A refusal is wrong whatever the name.
        let v = case("nope.default.svc.cluster.local", "REFUSED");
        assert_eq!(v.rule, "dns-answers-wrong", "{v:#?}");
    }

    #[tokio::test]
    async fn dns_pods_that_listen_but_never_answer_are_unreachable_not_down() {
        let serving = listening(
            "node-1@pod:kube-system/dns-0",
            53,
            vec![socket("0.0.0.0", 53, 0)],
        );
        let v = Case::new(CLIENT, NAME)
            .with(dns(
                CLIENT,
                "198.18.200.10",
                vec![
                    answer("198.18.200.10:53", "resolv.conf", "TIMEOUT", &[]),
                    answer("198.19.1.53:53", "explicit", "TIMEOUT", &[]),
                ],
            ))
            .with(upstream(true))
            .with(serving)
            .verdict();
        assert_eq!(class(&v), ("dns_failure", "dns_unreachable"), "{v:#?}");
        assert!(
            v.summary.contains("dropped on the way to it"),
            "{}",
            v.summary
        );
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
        assert!(
            !v.summary.contains("spec.dnsConfig"),
            "the inventory says ClusterFirst: no claim about the pod spec: {}",
            v.summary
        );
    }

    #[tokio::test]
    async fn a_pod_spec_naming_the_wrong_server_is_cited_and_fixed_there() {
        let mut c = Case::new(CLIENT, NAME)
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
                ],
            ))
            .with(upstream(true));
        meshctl_lab::topology::misconfigure_client_dns(&mut c.inventory);
        let v = c.verdict();
        assert_eq!(class(&v), ("dns_failure", "pod_dns_config"), "{v:?}");
        assert!(v.summary.contains("spec.dnsConfig"), "{}", v.summary);
        assert!(v.fix.contains("pod default/client-3"), "{}", v.fix);
        assert!(
            v.evidence
                .iter()
                .any(|e| e.artifact == "inventory" && e.observation.contains("dnsPolicy None")),
            "{v:?}"
        );
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
}
