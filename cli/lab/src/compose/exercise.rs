//! How a composed part shows: the `meshctl probe` run that should reveal
//! it (from, to, size, chosen from the place), a plain-tool command run on
//! the host that shows the symptom (ping, nc, dig inside a namespace), and
//! the sentences `lab fault compose` prints (what changed, what a user
//! sees).
//!
//! Pure.

use std::fmt::Display;

use probemesh_model::verdict::Class;

use super::actions::{LOSS_PERCENT, MISSING_POD_IP, WRONG_PORT, route_peer, second_address};
use super::spec::{
    FragNeeded, Hook, Mechanism, Part, Place, Protocol, node_of, other_node, pod_on,
};
use crate::faults::SHRUNK_MTU;
use crate::topology::{
    CLIENT_POD, CLOUDVM, CLOUDVM_NETNS, DNS_CLUSTER_IP, DNS_POD, LabNode, LabPod, NODE_2,
    NODE_PORT, NODES, WEB_CLUSTER_IP, WEB_POD, WEB_PORT,
};

/// The name the DNS exercises resolve.
pub const DNS_NAME: &str = "web.default.svc.cluster.local";

/// A part's probe run and plain-tool check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exercise {
    /// `meshctl probe --from`.
    pub from: String,
    /// `meshctl probe --to`.
    pub to: String,
    /// `meshctl probe --size` (ICMP payload bytes).
    pub size: u16,
    /// A command on the host that shows the symptom.
    pub observe: String,
}

fn ping(netns: &str, ip: impl Display) -> String {
    format!("ip netns exec {netns} ping -c 3 -W 1 {ip}")
}

fn nc(netns: &str, ip: impl Display, port: u16) -> String {
    format!("ip netns exec {netns} nc -z -w 2 {ip} {port}")
}

fn pod_target(p: LabPod, port: Option<u16>) -> String {
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    format!("pod:{}/{}{port}", p.namespace, p.name)
}

fn run(from: impl Into<String>, to: impl Into<String>, observe: String) -> Exercise {
    Exercise {
        from: from.into(),
        to: to.into(),
        size: 56,
        observe,
    }
}

/// cloudvm-1 pings node `n`.
fn ping_node(n: LabNode) -> Exercise {
    run(
        CLOUDVM,
        format!("probe:{}", n.name()),
        ping(CLOUDVM_NETNS, n.ip()),
    )
}

/// cloudvm-1 connects to node `n`'s NodePort.
fn nodeport(n: LabNode) -> Exercise {
    run(
        CLOUDVM,
        format!("nodeport:{}:{NODE_PORT}", n.name()),
        nc(CLOUDVM_NETNS, n.ip(), NODE_PORT),
    )
}

/// A node that is not `p`'s pings pod `p`.
fn ping_pod(p: LabPod) -> Exercise {
    let from = other_node(p.node);
    run(from.name(), pod_target(p, None), ping(from.netns(), p.ip))
}

/// Node `from` reaches web-0 directly, checked with `observe`.
fn web_pod_from(from: LabNode, observe: String) -> Exercise {
    run(from.name(), pod_target(WEB_POD, Some(WEB_PORT)), observe)
}

/// client-3 resolves the web Service's name through the cluster DNS.
fn cluster_dns() -> Exercise {
    run(
        format!(
            "{}@pod:{}/{}",
            CLIENT_POD.node.name(),
            CLIENT_POD.namespace,
            CLIENT_POD.name
        ),
        format!("dns:{DNS_NAME}"),
        format!(
            "ip netns exec {} dig +short +time=1 +tries=1 @{DNS_CLUSTER_IP} {DNS_NAME} | grep -qE '^[0-9.]+$'",
            CLIENT_POD.netns
        ),
    )
}

impl Part {
    /// The probe run and plain-tool check that exercise the part.
    pub fn exercise(self) -> Exercise {
        use Mechanism as M;
        use Place as P;
        let node_1 = NODES[0];
        match (self.mechanism(), self.protocol(), self.place()) {
            (M::Drop | M::Reject(_), Some(Protocol::Tcp), P::Pod(_)) => {
                web_pod_from(node_1, nc(node_1.netns(), WEB_POD.ip, WEB_PORT))
            }
            (M::Drop | M::Reject(_), Some(Protocol::Tcp), P::External) => nodeport(NODE_2),
            (M::Drop | M::Reject(_), Some(Protocol::Tcp), place) => {
                nodeport(node_of(place).unwrap_or(NODE_2))
            }
            (M::Drop | M::Reject(_), _, P::NodeHook(n, Hook::Forward)) => ping_pod(pod_on(n)),
            (M::Drop | M::Reject(_), _, P::Pod(p)) => ping_pod(p),
            (M::Route(_), _, P::Node(n)) => {
                let from = if route_peer(n) == NODE_2 {
                    n
                } else {
                    route_peer(n)
                };
                web_pod_from(from, ping(from.netns(), WEB_POD.ip))
            }
            (M::MtuShrink(_), _, P::Node(n)) => Exercise {
                size: 1472,
                ..run(
                    CLOUDVM,
                    format!("nodeport:{}:{NODE_PORT}", n.name()),
                    format!(
                        "ip netns exec {CLOUDVM_NETNS} ping -c 3 -W 1 -M do -s 1472 {}",
                        n.ip()
                    ),
                )
            },
            (M::Loss, _, P::FabricTo(n) | P::FabricFrom(n)) => Exercise {
                observe: format!(
                    "ip netns exec {CLOUDVM_NETNS} ping -c 50 -i 0.02 -q {}",
                    n.ip()
                ),
                ..ping_node(n)
            },
            (M::ListenerStopped | M::DnsDrop | M::DnsAnswer(_), _, _)
                if self.place() != P::Pod(WEB_POD) =>
            {
                cluster_dns()
            }
            (M::ListenerStopped | M::ListenerLoopback, _, _) => {
                web_pod_from(node_1, nc(node_1.netns(), WEB_POD.ip, WEB_PORT))
            }
            (M::NatMissing | M::DnatWrongPort | M::DnatMissingPod, _, P::Node(n)) => run(
                n.name(),
                "svc:default/web:80",
                nc(n.netns(), WEB_CLUSTER_IP, 80),
            ),
            (M::ConntrackFull, _, P::Node(n)) => nodeport(n),
            (M::SecondAddress, _, P::Node(n)) if n == NODE_2 => run(
                n.name(),
                pod_target(DNS_POD, None),
                ping(n.netns(), DNS_POD.ip),
            ),
            (M::SecondAddress, _, P::Node(n)) => {
                run(n.name(), "svc:default/web:80", ping(n.netns(), WEB_POD.ip))
            }
            (M::LinkDown, _, _) => web_pod_from(node_1, ping(node_1.netns(), WEB_POD.ip)),
            (_, _, place) => ping_node(node_of(place).unwrap_or(NODE_2)),
        }
    }

    /// One sentence on what the part changes.
    pub fn describe(self) -> String {
        let at = self.place();
        match self.mechanism() {
            Mechanism::Drop | Mechanism::Reject(_) => {
                let what = match (self.protocol(), at) {
                    (Some(Protocol::Tcp), Place::FabricFrom(_)) => {
                        "TCP replies from the NodePort".to_owned()
                    }
                    (Some(Protocol::Tcp), _) => "TCP to the web service".to_owned(),
                    (_, Place::FabricFrom(_) | Place::NodeHook(_, Hook::Output)) => {
                        "ICMP echo replies".to_owned()
                    }
                    _ => "ICMP echo requests".to_owned(),
                };
                let how = match self.mechanism() {
                    Mechanism::Reject(w) => format!("rejects (--reject-with {})", w.names().1),
                    _ => "drops".to_owned(),
                };
                format!("an iptables rule at {at} {how} {what}")
            }
            Mechanism::Route(kind) => {
                let target = match at {
                    Place::Node(n) => route_peer(n).pod_cidr(),
                    _ => format!("{}/32", NODE_2.ip()),
                };
                match kind.route_type() {
                    "" => format!("{at}'s route to {target} is removed"),
                    t => format!("{at}'s route to {target} becomes a {t} route"),
                }
            }
            Mechanism::MtuShrink(frag) => format!(
                "{at}'s eth0 and the fabric's route to it shrink to MTU {SHRUNK_MTU}; the fabric's ICMP frag-needed errors are {}",
                match frag {
                    FragNeeded::Filtered => "dropped by its firewall",
                    FragNeeded::Allowed => "let through",
                }
            ),
            Mechanism::Loss => format!(
                "the fabric drops {LOSS_PERCENT}% of the packets it forwards {} at random (the host's control traffic spared)",
                at.to_string()
                    .trim_start_matches("fabric:")
                    .replace('-', " ")
            ),
            Mechanism::ListenerStopped => format!("the server in {at} is stopped"),
            Mechanism::ListenerLoopback => {
                format!("the app in {at} is restarted listening on 127.0.0.1:{WEB_PORT}")
            }
            Mechanism::DnsDrop => {
                format!("iptables at {at} drops DNS (UDP and TCP 53) towards the cluster DNS")
            }
            Mechanism::DnsAnswer(answer) => format!(
                "the cluster DNS in {at} is restarted answering {} for every cluster name",
                answer.rcode()
            ),
            Mechanism::NatMissing => {
                format!("{at} loses its kube-proxy NAT rules (kube-proxy still listed as Running)")
            }
            Mechanism::DnatWrongPort => format!(
                "{at}'s kube-proxy rules DNAT default/web to {}:{WRONG_PORT} instead of targetPort {WEB_PORT} (the other nodes are right)",
                WEB_POD.ip
            ),
            Mechanism::DnatMissingPod => format!(
                "{at}'s kube-proxy rules DNAT default/web to {MISSING_POD_IP}:{WEB_PORT}, a pod address nobody holds (the other nodes are right)"
            ),
            Mechanism::ConntrackFull => {
                format!(
                    "{at}'s conntrack table is filled with assured entries, so every new flow is dropped"
                )
            }
            Mechanism::SecondAddress => {
                let n = node_of(at).unwrap_or(NODE_2);
                format!(
                    "{at}'s eth0 gains a second address {} and flannel.1 sends VXLAN from it",
                    second_address(n)
                )
            }
            Mechanism::LinkDown => match at {
                Place::Pod(p) => format!(
                    "{}'s veth {} on {} (the pod's link to cni0) is set down",
                    p.name,
                    p.host_veth,
                    p.node.name()
                ),
                _ => format!("a link at {at} is set down"),
            },
        }
    }

    /// What a user sees, from the probe run and the expected class.
    pub fn symptom(self) -> String {
        let ex = self.exercise();
        let class = self.truth().map_or(Class::Inconclusive, |r| r.class);
        let (from, to) = (&ex.from, &ex.to);
        match class {
            Class::Ok => format!(
                "from {from}, a {}-byte DF ping to {to} is answered by ICMP frag-needed (mtu {SHRUNK_MTU}), after which the path works at the smaller MTU",
                ex.size
            ),
            Class::NetworkUnreachable => format!("{from} gets no reply from {to}"),
            Class::PortUnreachable => {
                format!("{to} answers ping from {from}, but TCP to its port fails")
            }
            Class::DnsFailure => {
                format!("from {from}, {DNS_NAME} does not resolve through the cluster DNS")
            }
            Class::MtuBlackhole => format!(
                "from {from}, small packets to {to} pass and {}-byte DF packets are lost without an error",
                ex.size
            ),
            Class::Degraded => format!("{from} loses part of its packets to {to}"),
            Class::CniFailure => {
                format!("{from} reaches the nodes but not {to}")
            }
            Class::Inconclusive => format!("{from} to {to}"),
        }
    }
}
