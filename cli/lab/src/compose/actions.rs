//! What a composed part changes, as [`Action`]s: the real mechanism
//! (one iptables rule inserted into the filter table, a route replaced or
//! removed, a link's MTU or state, an address, a namespace's ruleset
//! re-rendered, a process stopped or restarted, the conntrack table filled)
//! and its exact undo (the same rule deleted by its text, the flannel route
//! put back, the link restored, the baseline ruleset, the process started).
//!
//! Pure: the lifecycle executes the actions.

use std::net::Ipv4Addr;

use probemesh_model::inventory::{InvalidInventory, Inventory};

use super::spec::{FragNeeded, Hook, Mechanism, Part, Place, Protocol, RouteKind, pod_on};
use crate::faults::{Action, Daemon, RuleOp, SHRUNK_MTU, UDP_STREAM_TIMEOUT, kube_proxy_rules};
use crate::rules::ProxyMode;
use crate::topology::{
    self, CLOUDVM_NETNS, DNS_CLUSTER_IP, DNS_POD, ETH_MTU, FABRIC, HOST_IP, LabNode, NODE_2,
    NODE_PORT, NODES, WEB_POD, WEB_PORT,
};

/// Loss of the `loss` mechanism, percent.
pub const LOSS_PERCENT: u8 = 20;
/// The port a `dnat-wrong-port` node sends web traffic to (nothing listens).
pub const WRONG_PORT: u16 = 8081;
/// The pod address a `dnat-missing-pod` node sends web traffic to: in
/// node-2's pod CIDR, held by no pod.
pub const MISSING_POD_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 99);

/// The second address `second-address@node-N` gives node-N: 198.18.0.2N.
pub fn second_address(node: LabNode) -> Ipv4Addr {
    let [a, b, c, d] = node.ip().octets();
    Ipv4Addr::new(a, b, c, d.saturating_add(10))
}

/// The node whose pod CIDR a route part at `node` breaks: web-0's node
/// (node-2) from node-1 and node-3; from node-2, node-1's pod CIDR, which
/// carries the replies of node-1's requests to web-0 (the return path).
pub fn route_peer(node: LabNode) -> LabNode {
    if node == NODE_2 { NODES[0] } else { NODE_2 }
}

impl Part {
    /// The namespace the part's rule, route or state lives in.
    pub fn netns(self) -> &'static str {
        match self.place() {
            Place::FabricTo(_) | Place::FabricFrom(_) => FABRIC,
            Place::Node(n) | Place::NodeHook(n, _) => n.netns(),
            Place::Pod(p) if self.mechanism() == Mechanism::LinkDown => p.node.netns(),
            Place::Pod(p) => p.netns,
            Place::External => CLOUDVM_NETNS,
        }
    }

    /// Every namespace the part changes (two parts of one fault may not
    /// share one).
    pub fn namespaces(self) -> Vec<&'static str> {
        match (self.mechanism(), self.place()) {
            (Mechanism::MtuShrink(_), Place::Node(n)) => vec![FABRIC, n.netns()],
            (Mechanism::LinkDown, Place::Pod(p)) => vec![p.node.netns(), p.netns],
            _ => vec![self.netns()],
        }
    }

    /// The route a route part changes.
    fn route_target(self) -> String {
        match self.place() {
            Place::Node(n) => route_peer(n).pod_cidr(),
            _ => format!("{}/32", NODE_2.ip()),
        }
    }

    /// The changes that make the part in a lab whose kube-proxy runs in
    /// `mode`.
    pub fn apply(self, mode: ProxyMode) -> Result<Vec<Action>, InvalidInventory> {
        let ip = |netns, commands: Vec<String>| Action::Ip { netns, commands };
        Ok(match (self.mechanism(), self.place()) {
            (Mechanism::Route(kind), place) => {
                let target = self.route_target();
                let command = match (kind, place) {
                    (RouteKind::Removed, _) => format!("route del {target}"),
                    (k, Place::External) => format!("route add {} {target}", k.route_type()),
                    (k, _) => format!("route replace {} {target}", k.route_type()),
                };
                vec![ip(self.netns(), vec![command])]
            }
            (Mechanism::MtuShrink(frag), Place::Node(n)) => {
                let mut all = Vec::new();
                if frag == FragNeeded::Filtered {
                    all.push(frag_needed_rule(RuleOp::Insert));
                }
                all.push(ip(
                    FABRIC,
                    vec![format!(
                        "route replace {}/32 dev br-nodes mtu {SHRUNK_MTU}",
                        n.ip()
                    )],
                ));
                all.push(ip(
                    n.netns(),
                    vec![format!("link set eth0 mtu {SHRUNK_MTU}")],
                ));
                all
            }
            (Mechanism::ListenerStopped, Place::Pod(p)) if p == DNS_POD => {
                vec![Action::Stop(Daemon::ClusterDns)]
            }
            (Mechanism::DnsAnswer(answer), _) => vec![
                Action::Stop(Daemon::ClusterDns),
                Action::Start(Daemon::BrokenClusterDns(answer)),
            ],
            (Mechanism::ListenerStopped, _) => {
                vec![Action::Stop(Daemon::Web { loopback: false })]
            }
            (Mechanism::ListenerLoopback, _) => vec![
                Action::Stop(Daemon::Web { loopback: false }),
                Action::Start(Daemon::Web { loopback: true }),
            ],
            (Mechanism::NatMissing, Place::Node(n)) => {
                node_nat(n, &topology::inventory(false)?, false, mode)
            }
            (Mechanism::DnatWrongPort, Place::Node(n)) => {
                let mut inv = topology::inventory(false)?;
                for port in inv.services.iter_mut().flat_map(|s| s.ports.iter_mut()) {
                    if port.target_port == WEB_PORT {
                        port.target_port = WRONG_PORT;
                    }
                }
                node_nat(n, &inv, true, mode)
            }
            (Mechanism::DnatMissingPod, Place::Node(n)) => {
                let mut inv = topology::inventory(false)?;
                for e in inv.services.iter_mut().flat_map(|s| s.endpoints.iter_mut()) {
                    if e.ip == std::net::IpAddr::V4(WEB_POD.ip) {
                        e.ip = MISSING_POD_IP.into();
                        e.pod = "web-0-gone".to_owned();
                    }
                }
                node_nat(n, &inv, true, mode)
            }
            (Mechanism::ConntrackFull, Place::Node(n)) => vec![
                Action::Sysctl {
                    netns: n.netns(),
                    key: UDP_STREAM_TIMEOUT,
                    value: "86400",
                },
                Action::ConntrackFill { netns: n.netns() },
            ],
            (Mechanism::SecondAddress, Place::Node(n)) => {
                let extra = second_address(n);
                vec![ip(
                    n.netns(),
                    vec![
                        format!("addr add {extra}/24 dev eth0"),
                        format!("link set flannel.1 type vxlan local {extra}"),
                    ],
                )]
            }
            (Mechanism::LinkDown, Place::Pod(p)) => vec![
                ip(
                    p.node.netns(),
                    vec![format!("link set {} down", p.host_veth)],
                ),
                Action::Settle {
                    netns: p.node.netns(),
                    device: "cni0",
                    carrier: false,
                },
            ],
            _ => self.rule_actions(RuleOp::Insert),
        })
    }

    /// The changes that undo [`Part::apply`], in order.
    pub fn clear(self, mode: ProxyMode) -> Result<Vec<Action>, InvalidInventory> {
        let ip = |netns, commands: Vec<String>| Action::Ip { netns, commands };
        Ok(match (self.mechanism(), self.place()) {
            (Mechanism::Route(kind), Place::External) => vec![ip(
                self.netns(),
                vec![format!(
                    "route del {} {}",
                    kind.route_type(),
                    self.route_target()
                )],
            )],
            (Mechanism::Route(_), Place::Node(n)) => {
                vec![ip(n.netns(), vec![topology::peer_route(route_peer(n))])]
            }
            (Mechanism::MtuShrink(frag), Place::Node(n)) => {
                let mut all = vec![
                    ip(n.netns(), vec![format!("link set eth0 mtu {ETH_MTU}")]),
                    ip(
                        FABRIC,
                        vec![format!("route del {}/32 dev br-nodes", n.ip())],
                    ),
                ];
                if frag == FragNeeded::Filtered {
                    all.push(frag_needed_rule(RuleOp::Delete));
                }
                // Senders that learned the smaller path MTU forget it.
                all.extend(
                    topology::namespaces()
                        .into_iter()
                        .map(|ns| ip(ns, vec!["route flush cache".to_owned()])),
                );
                all
            }
            (Mechanism::ListenerStopped, Place::Pod(p)) if p == DNS_POD => {
                vec![Action::Start(Daemon::ClusterDns)]
            }
            (Mechanism::DnsAnswer(answer), _) => vec![
                Action::Stop(Daemon::BrokenClusterDns(answer)),
                Action::Start(Daemon::ClusterDns),
            ],
            (Mechanism::ListenerStopped, _) => {
                vec![Action::Start(Daemon::Web { loopback: false })]
            }
            (Mechanism::ListenerLoopback, _) => vec![
                Action::Stop(Daemon::Web { loopback: true }),
                Action::Start(Daemon::Web { loopback: false }),
            ],
            (
                Mechanism::NatMissing | Mechanism::DnatWrongPort | Mechanism::DnatMissingPod,
                Place::Node(n),
            ) => node_nat(n, &topology::inventory(false)?, true, mode),
            (Mechanism::ConntrackFull, Place::Node(n)) => vec![
                Action::ConntrackFlush { netns: n.netns() },
                Action::Sysctl {
                    netns: n.netns(),
                    key: UDP_STREAM_TIMEOUT,
                    value: "120",
                },
            ],
            (Mechanism::SecondAddress, Place::Node(n)) => vec![ip(
                n.netns(),
                vec![
                    format!("link set flannel.1 type vxlan local {}", n.ip()),
                    format!("addr del {}/24 dev eth0", second_address(n)),
                ],
            )],
            (Mechanism::LinkDown, Place::Pod(p)) => vec![
                ip(p.node.netns(), vec![format!("link set {} up", p.host_veth)]),
                Action::Settle {
                    netns: p.node.netns(),
                    device: "cni0",
                    carrier: true,
                },
            ],
            _ => self.rule_actions(RuleOp::Delete),
        })
    }

    /// The filter-table rules of a filtering, loss or DNS part: chain and
    /// the arguments after it (one rule; DNS gets one per protocol).
    fn rules(self) -> Vec<(&'static str, Vec<String>)> {
        use Place as P;
        use Protocol::{Icmp, Tcp};
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let echo = |t: u8| words(&format!("-p icmp -m icmp --icmp-type {t}"));
        let tcp = |dir: &str, port: u16| words(&format!("-p tcp -m tcp {dir} {port}"));
        let to = |ip: Ipv4Addr| words(&format!("-d {ip}/32"));
        let from = |ip: Ipv4Addr| words(&format!("-s {ip}/32"));
        let m = self.mechanism();
        let matches: Vec<(&'static str, Vec<String>)> = match (m, self.protocol(), self.place()) {
            (Mechanism::Loss, _, P::FabricTo(n)) => vec![(
                "FORWARD",
                [to(n.ip()), words(&format!("! -s {HOST_IP}/32"))].concat(),
            )],
            (Mechanism::Loss, _, P::FabricFrom(n)) => vec![(
                "FORWARD",
                [from(n.ip()), words(&format!("! -d {HOST_IP}/32"))].concat(),
            )],
            (Mechanism::DnsDrop, _, place) => {
                let (chain, dst) = match place {
                    P::Pod(p) if p == DNS_POD => ("INPUT", DNS_POD.ip),
                    P::Pod(_) => ("OUTPUT", DNS_CLUSTER_IP),
                    _ => ("FORWARD", DNS_POD.ip),
                };
                ["udp", "tcp"]
                    .map(|proto| {
                        let m = words(&format!("-p {proto} -m {proto} --dport 53"));
                        (chain, [to(dst), m].concat())
                    })
                    .to_vec()
            }
            (Mechanism::Drop | Mechanism::Reject(_), Some(proto), place) => {
                let web = WEB_POD.ip;
                let one = match (proto, place) {
                    (Icmp, P::FabricTo(n)) => ("FORWARD", [to(n.ip()), echo(8)].concat()),
                    (Icmp, P::FabricFrom(n)) => ("FORWARD", [from(n.ip()), echo(0)].concat()),
                    (Tcp, P::FabricTo(n)) => {
                        ("FORWARD", [to(n.ip()), tcp("--dport", NODE_PORT)].concat())
                    }
                    (Tcp, P::FabricFrom(n)) => (
                        "FORWARD",
                        [from(n.ip()), tcp("--sport", NODE_PORT)].concat(),
                    ),
                    (Icmp, P::NodeHook(n, Hook::Input)) => {
                        ("INPUT", [to(n.ip()), echo(8)].concat())
                    }
                    (Icmp, P::NodeHook(n, Hook::Output)) => {
                        ("OUTPUT", [from(n.ip()), echo(0)].concat())
                    }
                    (Icmp, P::NodeHook(n, Hook::Forward)) => {
                        ("FORWARD", [to(pod_on(n).ip), echo(8)].concat())
                    }
                    (Tcp, P::NodeHook(..)) => {
                        ("FORWARD", [to(web), tcp("--dport", WEB_PORT)].concat())
                    }
                    (Icmp, P::Pod(p)) => ("INPUT", [to(p.ip), echo(8)].concat()),
                    (Tcp, P::Pod(p)) => ("INPUT", [to(p.ip), tcp("--dport", WEB_PORT)].concat()),
                    (Icmp, P::External) => ("OUTPUT", [to(NODE_2.ip()), echo(8)].concat()),
                    (Tcp, P::External) => (
                        "OUTPUT",
                        [to(NODE_2.ip()), tcp("--dport", NODE_PORT)].concat(),
                    ),
                    (_, P::Node(_)) => return Vec::new(),
                };
                vec![one]
            }
            _ => return Vec::new(),
        };
        let comment = format!("probemesh composed fault {self}");
        matches
            .into_iter()
            .map(|(chain, mut args)| {
                if m == Mechanism::Loss {
                    args.extend(words(&format!(
                        "-m statistic --mode random --probability {:.5}",
                        f64::from(LOSS_PERCENT) / 100.0
                    )));
                }
                args.extend(["-m", "comment", "--comment"].map(str::to_owned));
                args.push(comment.clone());
                match m {
                    Mechanism::Reject(with) => {
                        args.extend(words(&format!(
                            "-j REJECT --reject-with {}",
                            with.names().1
                        )));
                    }
                    _ => args.extend(words("-j DROP")),
                }
                (chain, args)
            })
            .collect()
    }

    fn rule_actions(self, op: RuleOp) -> Vec<Action> {
        let netns = self.netns();
        self.rules()
            .into_iter()
            .map(|(chain, args)| Action::Rule {
                netns,
                op,
                chain,
                args,
            })
            .collect()
    }
}

/// The fabric's firewall drops the router's own ICMP frag-needed errors.
fn frag_needed_rule(op: RuleOp) -> Action {
    Action::Rule {
        netns: FABRIC,
        op,
        chain: "OUTPUT",
        args: [
            "-p",
            "icmp",
            "-m",
            "icmp",
            "--icmp-type",
            "3/4",
            "-m",
            "comment",
            "--comment",
            "probemesh composed fault: frag-needed filtered",
            "-j",
            "DROP",
        ]
        .map(str::to_owned)
        .to_vec(),
    }
}

/// `node`'s kube-proxy rules rendered from `inventory` (kube-proxy's view
/// on that node) in the lab's proxy mode, with the stale NAT entries
/// flushed.
fn node_nat(
    node: LabNode,
    inventory: &Inventory,
    kube_proxy: bool,
    mode: ProxyMode,
) -> Vec<Action> {
    vec![
        kube_proxy_rules(node, inventory, kube_proxy, mode),
        Action::ConntrackFlush {
            netns: node.netns(),
        },
    ]
}
