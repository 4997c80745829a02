//! Composed lab faults (issue 12, item 4): a fault built from parts,
//! `MECHANISM[/PROTOCOL]@PLACE[,...]`, instead of picked from the catalogue.
//!
//! A [`Part`] is a [`Mechanism`] (drop, reject with an ICMP code or a TCP
//! reset, a blackhole/unreachable/prohibit route, a removed route, an MTU
//! shrink with frag-needed filtered, random loss, a stopped or
//! loopback-only listener, DNS dropped, a node's NAT rules missing), the
//! [`Protocol`] it filters where that matters, and the [`Place`] it is made
//! at (the fabric router in one direction, a node's INPUT/OUTPUT/FORWARD
//! path or routing table, a pod's namespace, the external host). Parts that
//! make no sense are refused with the reason; every accepted part is made
//! the real way (iptables rules and `ip` routes, links and processes) and
//! undone exactly by `lab clear`.
//!
//! The expected verdict of a part comes from one table, [`TRUTH`], keyed by
//! the mechanism's family and, where it changes the answer, the place
//! (documented in `docs/lab-faults.md`); never per case. The probe run that
//! exercises a part follows from its place. A composed fault of several
//! parts is accepted only when the parts agree on the verdict and touch
//! different namespaces, so every symptom has one cause and every undo is
//! exact.
//!
//! Pure: it returns [`Action`]s, the lifecycle executes them.

use std::fmt;
use std::str::FromStr;

use probemesh_model::inventory::InvalidInventory;
use probemesh_model::verdict::{Cause, Class};
use serde::Serialize;

use crate::faults::{Action, Daemon, Expect, Fault, RuleOp, SHRUNK_MTU, UnknownFault};
use crate::rules::{NodeRules, node_ruleset};
use crate::topology::{
    self, CLIENT_POD, CLOUDVM, CLOUDVM_NETNS, DNS_CLUSTER_IP, DNS_POD, ETH_MTU, FABRIC, LabNode,
    LabPod, NODE_2, NODE_3, NODE_PORT, NODES, PODS, WEB_CLUSTER_IP, WEB_POD, WEB_PORT,
};

/// Loss of the `loss` mechanism, percent.
pub const COMPOSED_LOSS_PERCENT: u8 = 20;

/// How a part breaks the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// An iptables rule drops the packets silently.
    Drop,
    /// An iptables rule rejects them.
    Reject(RejectWith),
    /// A route to the destination is replaced or removed.
    Route(RouteKind),
    /// A node's link (and the fabric's route to it) shrink to
    /// [`SHRUNK_MTU`] while the fabric drops its ICMP frag-needed errors.
    MtuShrink,
    /// The fabric drops [`COMPOSED_LOSS_PERCENT`] % of the packets at random.
    Loss,
    /// The pod's server process is stopped.
    ListenerStopped,
    /// The web app is restarted listening on 127.0.0.1 only.
    ListenerLoopback,
    /// DNS queries (UDP and TCP port 53) to the cluster DNS pod are dropped.
    DnsDrop,
    /// A node's kube-proxy NAT rules are gone (kube-proxy still listed as
    /// running in the inventory).
    NatMissing,
}

/// What a reject rule answers with (`iptables -j REJECT --reject-with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectWith {
    /// ICMP destination unreachable, code 3 (port unreachable).
    PortUnreachable,
    /// ICMP destination unreachable, code 1 (host unreachable).
    HostUnreachable,
    /// ICMP destination unreachable, code 13 (administratively prohibited).
    AdminProhibited,
    /// A TCP RST (TCP only).
    TcpReset,
}

/// The route a `route-*` mechanism leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `blackhole`: packets vanish (the sender gets EINVAL).
    Blackhole,
    /// `unreachable`: ICMP host unreachable (EHOSTUNREACH locally).
    Unreachable,
    /// `prohibit`: ICMP administratively prohibited (EACCES locally).
    Prohibit,
    /// The route is deleted: packets follow the default route instead.
    Removed,
}

/// The traffic a filtering part matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// ICMP echo requests (or, on a return path, echo replies).
    Icmp,
    /// TCP to the web service (NodePort 30080, or 8080 once DNATed).
    Tcp,
}

/// A node's netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Packets addressed to the node.
    Input,
    /// Packets the node sends.
    Output,
    /// Packets the node routes (to and from its pods, NodePort traffic).
    Forward,
}

/// Where a part is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The fabric router, on packets it forwards towards the node.
    FabricTo(LabNode),
    /// The fabric router, on packets it forwards from the node (the return
    /// direction).
    FabricFrom(LabNode),
    /// A node as a whole: its links, routing table and NAT rules.
    Node(LabNode),
    /// One netfilter hook of a node.
    NodeHook(LabNode, Hook),
    /// A pod's namespace.
    Pod(LabPod),
    /// The external host `cloudvm-1`.
    External,
}

/// One part of a composed fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// How it breaks.
    pub mechanism: Mechanism,
    /// What it filters (filtering mechanisms only).
    pub protocol: Option<Protocol>,
    /// Where.
    pub place: Place,
}

/// A composed fault: one or more parts that agree on the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    parts: Vec<Part>,
}

/// A spec `meshctl lab fault compose` refuses (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    /// Nothing given.
    #[error("an empty fault spec; write MECHANISM[/PROTOCOL]@PLACE[,...], e.g. drop/icmp@node-2:input")]
    Empty,
    /// A part without `@PLACE`.
    #[error("'{0}' has no @PLACE; write MECHANISM[/PROTOCOL]@PLACE, e.g. drop/icmp@node-2:input")]
    NoPlace(String),
    /// An unknown mechanism.
    #[error("unknown mechanism '{0}'; the mechanisms are: {list}", list = mechanism_names().join(", "))]
    UnknownMechanism(String),
    /// An unknown protocol.
    #[error("unknown protocol '{0}'; the protocols are: icmp, tcp")]
    UnknownProtocol(String),
    /// An unknown place.
    #[error("unknown place '{0}'; the places are: {list}", list = place_names().join(", "))]
    UnknownPlace(String),
    /// A combination that does not make sense.
    #[error("'{part}' is refused: {reason}")]
    Refused {
        /// The part as given.
        part: String,
        /// Why, and what to use instead.
        reason: String,
    },
    /// Two parts change the same namespace.
    #[error("'{a}' and '{b}' both change {netns}; give each namespace one part so that clearing undoes each exactly")]
    Clash {
        /// One part.
        a: String,
        /// The other.
        b: String,
        /// The namespace both change.
        netns: &'static str,
    },
    /// Two parts that would each call for a different verdict.
    #[error("'{a}' means {ea} but '{b}' means {eb}; compose parts of one verdict (one fault at a time, so every symptom has one cause)")]
    Disagree {
        /// One part.
        a: String,
        /// Its verdict.
        ea: String,
        /// The other.
        b: String,
        /// Its verdict.
        eb: String,
    },
}

/// Every mechanism, in a fixed order (the order `random` draws from).
pub const MECHANISMS: [Mechanism; 15] = [
    Mechanism::Drop,
    Mechanism::Reject(RejectWith::PortUnreachable),
    Mechanism::Reject(RejectWith::HostUnreachable),
    Mechanism::Reject(RejectWith::AdminProhibited),
    Mechanism::Reject(RejectWith::TcpReset),
    Mechanism::Route(RouteKind::Blackhole),
    Mechanism::Route(RouteKind::Unreachable),
    Mechanism::Route(RouteKind::Prohibit),
    Mechanism::Route(RouteKind::Removed),
    Mechanism::MtuShrink,
    Mechanism::Loss,
    Mechanism::ListenerStopped,
    Mechanism::ListenerLoopback,
    Mechanism::DnsDrop,
    Mechanism::NatMissing,
];

const HOOKS: [Hook; 3] = [Hook::Input, Hook::Output, Hook::Forward];

/// Every place, in a fixed order.
pub fn places() -> Vec<Place> {
    let mut all = Vec::new();
    for n in NODES {
        all.push(Place::FabricTo(n));
        all.push(Place::FabricFrom(n));
    }
    for n in NODES {
        all.push(Place::Node(n));
        all.extend(HOOKS.map(|h| Place::NodeHook(n, h)));
    }
    all.extend(PODS.map(Place::Pod));
    all.push(Place::External);
    all
}

fn mechanism_names() -> Vec<&'static str> {
    MECHANISMS.iter().map(|m| m.name()).collect()
}

fn place_names() -> Vec<String> {
    places().iter().map(Place::to_string).collect()
}

impl Mechanism {
    /// The spec name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Drop => "drop",
            Mechanism::Reject(RejectWith::PortUnreachable) => "reject-port-unreachable",
            Mechanism::Reject(RejectWith::HostUnreachable) => "reject-host-unreachable",
            Mechanism::Reject(RejectWith::AdminProhibited) => "reject-admin-prohibited",
            Mechanism::Reject(RejectWith::TcpReset) => "reject-tcp-reset",
            Mechanism::Route(RouteKind::Blackhole) => "route-blackhole",
            Mechanism::Route(RouteKind::Unreachable) => "route-unreachable",
            Mechanism::Route(RouteKind::Prohibit) => "route-prohibit",
            Mechanism::Route(RouteKind::Removed) => "route-removed",
            Mechanism::MtuShrink => "mtu-shrink",
            Mechanism::Loss => "loss",
            Mechanism::ListenerStopped => "listener-stopped",
            Mechanism::ListenerLoopback => "listener-loopback",
            Mechanism::DnsDrop => "dns-drop",
            Mechanism::NatMissing => "nat-missing",
        }
    }

    /// Whether the mechanism is an iptables filter rule on one protocol.
    fn filters(self) -> bool {
        matches!(self, Mechanism::Drop | Mechanism::Reject(_))
    }

    /// The protocol a filtering mechanism uses when none is given.
    fn default_protocol(self) -> Option<Protocol> {
        match self {
            Mechanism::Reject(RejectWith::TcpReset) => Some(Protocol::Tcp),
            m if m.filters() => Some(Protocol::Icmp),
            _ => None,
        }
    }
}

impl FromStr for Mechanism {
    type Err = InvalidSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MECHANISMS
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| InvalidSpec::UnknownMechanism(s.to_owned()))
    }
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Icmp => "icmp",
            Protocol::Tcp => "tcp",
        }
    }
}

impl FromStr for Protocol {
    type Err = InvalidSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Protocol::Icmp, Protocol::Tcp]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| InvalidSpec::UnknownProtocol(s.to_owned()))
    }
}

impl Hook {
    fn chain(self) -> &'static str {
        match self {
            Hook::Input => "INPUT",
            Hook::Output => "OUTPUT",
            Hook::Forward => "FORWARD",
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::FabricTo(n) => write!(f, "fabric:to-{}", n.name()),
            Place::FabricFrom(n) => write!(f, "fabric:from-{}", n.name()),
            Place::Node(n) => f.write_str(&n.name()),
            Place::NodeHook(n, h) => write!(f, "{}:{}", n.name(), h.chain().to_lowercase()),
            Place::Pod(p) => write!(f, "pod:{}", p.name),
            Place::External => f.write_str(CLOUDVM),
        }
    }
}

impl FromStr for Place {
    type Err = InvalidSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        places()
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| InvalidSpec::UnknownPlace(s.to_owned()))
    }
}

impl Place {
    /// The table key of the place, for rows of [`TRUTH`] that depend on it.
    fn key(self) -> String {
        self.to_string()
    }
}

/// One row of the ground-truth table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruthRow {
    /// The mechanism family: `filter/icmp`, `filter/tcp` (drop and every
    /// reject), `route` (every route kind), or a mechanism's name.
    pub family: &'static str,
    /// The place the row is for, or `*` for any place the part is accepted at.
    pub place: &'static str,
    /// Expected verdict class.
    pub class: Class,
    /// Expected cause.
    pub cause: Option<Cause>,
    /// Why this is the truth.
    pub why: &'static str,
}

/// The ground truth of every composed part, derived from the mechanism (and
/// the place where it changes the answer); the first matching row wins.
pub const TRUTH: [TruthRow; 11] = [
    TruthRow {
        family: "filter/icmp",
        place: "*",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Firewall),
        why: "a rule drops or rejects the echoes: ping fails and a rule is the reason",
    },
    TruthRow {
        family: "filter/tcp",
        place: "*",
        class: Class::PortUnreachable,
        cause: Some(Cause::Filtered),
        why: "ping passes; a rule drops or rejects the connection (a RST or ICMP error from a rule is not a closed port)",
    },
    TruthRow {
        family: "route",
        place: "*",
        class: Class::NetworkUnreachable,
        cause: Some(Cause::Routing),
        why: "no usable route to the destination",
    },
    TruthRow {
        family: "mtu-shrink",
        place: "*",
        class: Class::MtuBlackhole,
        cause: None,
        why: "the path MTU falls below the sender's and no frag-needed reaches it",
    },
    TruthRow {
        family: "loss",
        place: "*",
        class: Class::Degraded,
        cause: Some(Cause::Loss),
        why: "the path works but loses a fifth of the packets",
    },
    TruthRow {
        family: "listener-stopped",
        place: "pod:dns-0",
        class: Class::DnsFailure,
        cause: Some(Cause::DnsServiceDown),
        why: "the cluster DNS server is gone; addresses and the upstream still work",
    },
    TruthRow {
        family: "listener-stopped",
        place: "pod:web-0",
        class: Class::PortUnreachable,
        cause: Some(Cause::Refused),
        why: "nothing listens on the port; the pod's kernel answers RST",
    },
    TruthRow {
        family: "listener-loopback",
        place: "*",
        class: Class::PortUnreachable,
        cause: Some(Cause::LoopbackOnly),
        why: "the app listens on 127.0.0.1 only",
    },
    TruthRow {
        family: "dns-drop",
        place: "pod:dns-0",
        class: Class::DnsFailure,
        cause: Some(Cause::DnsServiceDown),
        why: "the cluster DNS answers nobody",
    },
    TruthRow {
        family: "dns-drop",
        place: "node-3:forward",
        class: Class::DnsFailure,
        cause: Some(Cause::DnsUnreachable),
        why: "pods on node-3 cannot reach the cluster DNS while the upstream answers them",
    },
    TruthRow {
        family: "nat-missing",
        place: "*",
        class: Class::CniFailure,
        cause: Some(Cause::KubeProxyRulesMissing),
        why: "the node has no NAT rules for the Service",
    },
];

/// The `meshctl probe` run that exercises a composed fault (owned: composed
/// targets are built from the place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRun {
    /// `--from`.
    pub from: String,
    /// `--to`.
    pub to: String,
    /// `--size`: ICMP payload bytes.
    pub size: u16,
}

/// A composed fault as `meshctl lab fault compose|random` prints it: the
/// catalogue's fields (`lab fault --list`), built from the parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComposedInfo {
    /// The canonical spec; `lab fault compose NAME` makes it again.
    pub name: String,
    /// What a user sees.
    pub symptom: String,
    /// What the lab changes, part by part.
    pub mechanism: String,
    /// A plain-tool command on the host that shows the symptom.
    pub observe: String,
    /// The probe run that should reveal it.
    pub probe: ProbeRun,
    /// The verdict it should get (from [`TRUTH`]).
    pub expect: Expect,
}

/// What a part's probe run and plain-tool check look like.
struct Exercise {
    from: String,
    to: String,
    size: u16,
    observe: String,
}

const DNS_NAME: &str = "web.default.svc.cluster.local";

fn refuse(part: &str, reason: &str) -> InvalidSpec {
    InvalidSpec::Refused {
        part: part.to_owned(),
        reason: reason.to_owned(),
    }
}

fn pod_on(node: LabNode) -> LabPod {
    PODS.into_iter()
        .find(|p| p.node == node)
        .unwrap_or(WEB_POD)
}

/// A node that is not `node` (to reach `node`'s pods through the overlay).
fn other_node(node: LabNode) -> LabNode {
    if node == NODE_3 { NODES[0] } else { NODE_3 }
}

fn ns_ping(netns: &str, ip: impl fmt::Display) -> String {
    format!("ip netns exec {netns} ping -c 3 -W 1 {ip}")
}

fn ns_nc(netns: &str, ip: impl fmt::Display, port: u16) -> String {
    format!("ip netns exec {netns} nc -z -w 2 {ip} {port}")
}

impl Part {
    /// Checks that the part makes sense; the error names the reason and
    /// what to use instead.
    pub fn new(
        mechanism: Mechanism,
        protocol: Option<Protocol>,
        place: Place,
    ) -> Result<Part, InvalidSpec> {
        let protocol = protocol.or(mechanism.default_protocol());
        let part = Part {
            mechanism,
            protocol,
            place,
        };
        let shown = part.to_string();
        if protocol.is_some() && !mechanism.filters() {
            return Err(refuse(
                &shown,
                "only drop and reject-* take a /PROTOCOL; the other mechanisms define their own traffic",
            ));
        }
        part.refusal().map_or(Ok(part), |r| Err(refuse(&shown, r)))
    }

    /// Why this part makes no sense, if it does not.
    fn refusal(self) -> Option<&'static str> {
        use Mechanism as M;
        use Place as P;
        use Protocol::{Icmp, Tcp};
        match (self.mechanism, self.protocol, self.place) {
            (M::Reject(RejectWith::TcpReset), Some(Icmp), _) => {
                Some("a TCP reset answers TCP only: use reject-tcp-reset/tcp")
            }
            (M::Drop | M::Reject(_), _, P::Node(_)) => Some(
                "a filter rule sits on one hook: place it at node-N:input, node-N:output or node-N:forward",
            ),
            (M::Drop | M::Reject(_), Some(Tcp), P::NodeHook(_, Hook::Input | Hook::Output)) => Some(
                "TCP to the NodePort is DNATed in PREROUTING and forwarded, never delivered to INPUT nor sent from OUTPUT: place it at node-N:forward",
            ),
            (M::Drop | M::Reject(_), Some(Tcp), P::Pod(p)) if p != WEB_POD => {
                Some("only pod:web-0 serves TCP in the lab")
            }
            (M::Drop | M::Reject(_), _, _) => None,
            (M::Route(_), _, P::Node(n)) if n == NODE_2 => Some(
                "a route fault cuts a node off web-0's node (node-2); node-2 reaches web-0 over cni0: place it at node-1 or node-3",
            ),
            (M::Route(RouteKind::Removed), _, P::External) => Some(
                "cloudvm-1 reaches the lab through its default route only, which also carries its probe's control link: use route-blackhole, route-unreachable or route-prohibit there",
            ),
            (M::Route(_), _, P::Node(_) | P::External) => None,
            (M::Route(_), _, _) => Some(
                "routes are placed at a node (node-1, node-3) or at cloudvm-1; the fabric's routes also carry the probes' control links, and a probe cut off cannot report",
            ),
            (M::MtuShrink, _, P::Node(_)) => None,
            (M::MtuShrink, _, _) => Some("an MTU shrink is placed at a node: node-1, node-2 or node-3"),
            (M::Loss, _, P::FabricTo(_) | P::FabricFrom(_)) => None,
            (M::Loss, _, _) => Some(
                "loss is made on the fabric router in one direction: fabric:to-node-N or fabric:from-node-N",
            ),
            (M::ListenerStopped, _, P::Pod(p)) if p == WEB_POD || p == DNS_POD => None,
            (M::ListenerStopped, _, _) => {
                Some("listeners run in pod:web-0 (the web app) and pod:dns-0 (the cluster DNS)")
            }
            (M::ListenerLoopback, _, P::Pod(p)) if p == WEB_POD => None,
            (M::ListenerLoopback, _, _) => Some("only the web app (pod:web-0) can listen on loopback"),
            (M::DnsDrop, _, P::Pod(p)) if p == DNS_POD => None,
            (M::DnsDrop, _, P::NodeHook(n, Hook::Forward)) if n == CLIENT_POD.node => None,
            (M::DnsDrop, _, _) => Some(
                "DNS is dropped at the cluster DNS (pod:dns-0) or on the client's node (node-3:forward)",
            ),
            (M::NatMissing, _, P::Node(_)) => None,
            (M::NatMissing, _, _) => Some("NAT rules are a node's: place it at node-1, node-2 or node-3"),
        }
    }

    /// The family key of [`TRUTH`].
    fn family(self) -> String {
        match (self.mechanism, self.protocol) {
            (Mechanism::Drop | Mechanism::Reject(_), Some(p)) => format!("filter/{}", p.name()),
            (Mechanism::Route(_), _) => "route".to_owned(),
            (m, _) => m.name().to_owned(),
        }
    }

    /// The ground truth, from [`TRUTH`].
    pub fn expect(self) -> Expect {
        let (family, place) = (self.family(), self.place.key());
        TRUTH
            .iter()
            .find(|r| r.family == family && (r.place == "*" || r.place == place))
            .map(|r| Expect {
                class: r.class,
                cause: r.cause,
            })
            .unwrap_or(Expect {
                class: Class::Inconclusive,
                cause: None,
            })
    }

    /// The namespaces the part changes.
    fn namespaces(self) -> Vec<&'static str> {
        match (self.mechanism, self.place) {
            (Mechanism::MtuShrink, Place::Node(n)) => vec![FABRIC, n.netns()],
            (Mechanism::ListenerStopped | Mechanism::ListenerLoopback, Place::Pod(p)) => {
                vec![p.netns]
            }
            _ => vec![self.netns()],
        }
    }

    /// The namespace the part's rule or route lives in.
    fn netns(self) -> &'static str {
        match self.place {
            Place::FabricTo(_) | Place::FabricFrom(_) => FABRIC,
            Place::Node(n) | Place::NodeHook(n, _) => n.netns(),
            Place::Pod(p) => p.netns,
            Place::External => CLOUDVM_NETNS,
        }
    }

    /// The probe run and plain-tool check that exercise the part.
    fn exercise(self) -> Exercise {
        let nodeport = |n: LabNode| Exercise {
            from: CLOUDVM.to_owned(),
            to: format!("nodeport:{}:{NODE_PORT}", n.name()),
            size: 56,
            observe: ns_nc(CLOUDVM_NETNS, n.ip(), NODE_PORT),
        };
        let ping_node = |n: LabNode| Exercise {
            from: CLOUDVM.to_owned(),
            to: format!("probe:{}", n.name()),
            size: 56,
            observe: ns_ping(CLOUDVM_NETNS, n.ip()),
        };
        let ping_pod = |p: LabPod| {
            let from = other_node(p.node);
            Exercise {
                from: from.name(),
                to: format!("pod:{}/{}", p.namespace, p.name),
                size: 56,
                observe: ns_ping(from.netns(), p.ip),
            }
        };
        let web_from_node_1 = |to: String| Exercise {
            from: NODES[0].name(),
            to,
            size: 56,
            observe: ns_nc(NODES[0].netns(), WEB_POD.ip, WEB_PORT),
        };
        let cluster_dns = || Exercise {
            from: format!("{}@pod:{}/{}", NODE_3.name(), CLIENT_POD.namespace, CLIENT_POD.name),
            to: format!("dns:{DNS_NAME}"),
            size: 56,
            observe: format!(
                "ip netns exec {} dig +time=1 +tries=1 @{DNS_CLUSTER_IP} {DNS_NAME}",
                CLIENT_POD.netns
            ),
        };
        use Mechanism as M;
        use Place as P;
        match (self.mechanism, self.protocol, self.place) {
            (M::Drop | M::Reject(_), Some(Protocol::Tcp), P::FabricTo(n) | P::FabricFrom(n))
            | (M::Drop | M::Reject(_), Some(Protocol::Tcp), P::NodeHook(n, _)) => nodeport(n),
            (M::Drop | M::Reject(_), Some(Protocol::Tcp), P::External) => nodeport(NODE_2),
            (M::Drop | M::Reject(_), Some(Protocol::Tcp), P::Pod(_)) => {
                web_from_node_1(format!("pod:default/web-0:{WEB_PORT}"))
            }
            (M::Drop | M::Reject(_), Some(Protocol::Icmp), P::NodeHook(n, Hook::Forward)) => {
                ping_pod(pod_on(n))
            }
            (M::Drop | M::Reject(_), Some(Protocol::Icmp), P::Pod(p)) => ping_pod(p),
            (M::Route(_), _, P::Node(n)) => Exercise {
                from: n.name(),
                to: format!("pod:default/web-0:{WEB_PORT}"),
                size: 56,
                observe: ns_ping(n.netns(), WEB_POD.ip),
            },
            (M::MtuShrink, _, P::Node(n)) => Exercise {
                from: CLOUDVM.to_owned(),
                to: format!("nodeport:{}:{NODE_PORT}", n.name()),
                size: 1472,
                observe: format!(
                    "ip netns exec {CLOUDVM_NETNS} ping -c 3 -W 1 -M do -s 1472 {}",
                    n.ip()
                ),
            },
            (M::ListenerStopped | M::ListenerLoopback | M::DnsDrop, _, P::Pod(p))
                if p == DNS_POD =>
            {
                cluster_dns()
            }
            (M::DnsDrop, _, _) => cluster_dns(),
            (M::ListenerStopped, _, _) => web_from_node_1("svc:default/web:80".to_owned()),
            (M::ListenerLoopback, _, _) => {
                web_from_node_1(format!("pod:default/web-0:{WEB_PORT}"))
            }
            (M::NatMissing, _, P::Node(n)) => Exercise {
                from: n.name(),
                to: "svc:default/web:80".to_owned(),
                size: 56,
                observe: ns_nc(n.netns(), WEB_CLUSTER_IP, 80),
            },
            (_, _, P::FabricTo(n) | P::FabricFrom(n) | P::NodeHook(n, _) | P::Node(n)) => {
                ping_node(n)
            }
            (_, _, _) => ping_node(NODE_2),
        }
    }

    /// The iptables rule of a filtering or loss part: chain and arguments
    /// after it (filter table).
    fn rule(self, spec: &str) -> Option<(&'static str, Vec<String>)> {
        let echo = |t: &str| {
            vec![
                "-p".into(),
                "icmp".into(),
                "-m".into(),
                "icmp".into(),
                "--icmp-type".into(),
                t.into(),
            ]
        };
        let tcp = |dir: &str, port: u16| {
            vec![
                "-p".into(),
                "tcp".into(),
                "-m".into(),
                "tcp".into(),
                dir.into(),
                port.to_string(),
            ]
        };
        let addr = |flag: &str, ip: String| vec![flag.to_owned(), format!("{ip}/32")];
        use Place as P;
        use Protocol::{Icmp, Tcp};
        let (chain, matches): (&'static str, Vec<String>) = match (self.mechanism, self.protocol, self.place) {
            (Mechanism::Loss, _, P::FabricTo(n)) => ("FORWARD", addr("-d", n.ip().to_string())),
            (Mechanism::Loss, _, P::FabricFrom(n)) => ("FORWARD", addr("-s", n.ip().to_string())),
            (Mechanism::DnsDrop, _, P::Pod(_)) => ("INPUT", Vec::new()),
            (Mechanism::DnsDrop, _, P::NodeHook(..)) => ("FORWARD", addr("-d", DNS_POD.ip.to_string())),
            (Mechanism::Drop | Mechanism::Reject(_), Some(proto), place) => match (proto, place) {
                (Icmp, P::FabricTo(n)) => ("FORWARD", [addr("-d", n.ip().to_string()), echo("echo-request")].concat()),
                (Icmp, P::FabricFrom(n)) => ("FORWARD", [addr("-s", n.ip().to_string()), echo("echo-reply")].concat()),
                (Tcp, P::FabricTo(n)) => ("FORWARD", [addr("-d", n.ip().to_string()), tcp("--dport", NODE_PORT)].concat()),
                (Tcp, P::FabricFrom(n)) => ("FORWARD", [addr("-s", n.ip().to_string()), tcp("--sport", NODE_PORT)].concat()),
                (Icmp, P::NodeHook(n, Hook::Input)) => ("INPUT", [addr("-d", n.ip().to_string()), echo("echo-request")].concat()),
                (Icmp, P::NodeHook(n, Hook::Output)) => ("OUTPUT", [addr("-s", n.ip().to_string()), echo("echo-reply")].concat()),
                (Icmp, P::NodeHook(n, Hook::Forward)) => ("FORWARD", [addr("-d", pod_on(n).ip.to_string()), echo("echo-request")].concat()),
                (Tcp, P::NodeHook(_, _)) => ("FORWARD", [addr("-d", WEB_POD.ip.to_string()), tcp("--dport", WEB_PORT)].concat()),
                (Icmp, P::Pod(p)) => ("INPUT", [addr("-d", p.ip.to_string()), echo("echo-request")].concat()),
                (Tcp, P::Pod(p)) => ("INPUT", [addr("-d", p.ip.to_string()), tcp("--dport", WEB_PORT)].concat()),
                (Icmp, P::External) => ("OUTPUT", [addr("-d", NODE_2.ip().to_string()), echo("echo-request")].concat()),
                (Tcp, P::External) => ("OUTPUT", [addr("-d", NODE_2.ip().to_string()), tcp("--dport", NODE_PORT)].concat()),
                (_, P::Node(_)) => return None,
            },
            _ => return None,
        };
        let mut args = matches;
        if self.mechanism == Mechanism::Loss {
            args.extend([
                "-m".into(),
                "statistic".into(),
                "--mode".into(),
                "random".into(),
                "--probability".into(),
                format!("{:.5}", f64::from(COMPOSED_LOSS_PERCENT) / 100.0),
            ]);
        }
        args.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            format!("probemesh composed fault {spec}"),
            "-j".into(),
        ]);
        match self.mechanism {
            Mechanism::Reject(with) => args.extend([
                "REJECT".into(),
                "--reject-with".into(),
                match with {
                    RejectWith::PortUnreachable => "icmp-port-unreachable",
                    RejectWith::HostUnreachable => "icmp-host-unreachable",
                    RejectWith::AdminProhibited => "icmp-admin-prohibited",
                    RejectWith::TcpReset => "tcp-reset",
                }
                .into(),
            ]),
            _ => args.push("DROP".into()),
        }
        Some((chain, args))
    }

    /// iptables rule actions (one per protocol for DNS) for this part.
    fn rule_actions(self, op: RuleOp) -> Vec<Action> {
        let spec = self.to_string();
        let Some((chain, args)) = self.rule(&spec) else {
            return Vec::new();
        };
        let netns = self.netns();
        if self.mechanism == Mechanism::DnsDrop {
            return ["udp", "tcp"]
                .into_iter()
                .map(|proto| {
                    let mut a = args.clone();
                    let at = a.iter().position(|x| x == "-m").unwrap_or(a.len());
                    a.splice(
                        at..at,
                        ["-p", proto, "-m", proto, "--dport", "53"].map(String::from),
                    );
                    Action::Rule {
                        netns,
                        op,
                        chain,
                        args: a,
                    }
                })
                .collect();
        }
        vec![Action::Rule {
            netns,
            op,
            chain,
            args,
        }]
    }

    fn route_target(self) -> String {
        match self.place {
            Place::External => format!("{}/32", NODE_2.ip()),
            _ => NODE_2.pod_cidr(),
        }
    }

    /// The changes that make the part.
    fn apply(self) -> Result<Vec<Action>, InvalidInventory> {
        Ok(match (self.mechanism, self.place) {
            (Mechanism::Route(kind), _) => {
                let target = self.route_target();
                let command = match (kind, self.place) {
                    (RouteKind::Removed, _) => format!("route del {target}"),
                    (_, Place::External) => format!("route add {} {target}", route_type(kind)),
                    _ => format!("route replace {} {target}", route_type(kind)),
                };
                vec![Action::Ip {
                    netns: self.netns(),
                    commands: vec![command],
                }]
            }
            (Mechanism::MtuShrink, Place::Node(n)) => vec![
                frag_needed_rule(RuleOp::Insert),
                Action::Ip {
                    netns: FABRIC,
                    commands: vec![format!("route replace {}/32 dev br-nodes mtu {SHRUNK_MTU}", n.ip())],
                },
                Action::Ip {
                    netns: n.netns(),
                    commands: vec![format!("link set eth0 mtu {SHRUNK_MTU}")],
                },
            ],
            (Mechanism::ListenerStopped, Place::Pod(p)) => vec![Action::Stop(daemon(p, false))],
            (Mechanism::ListenerLoopback, _) => vec![
                Action::Stop(Daemon::Web { loopback: false }),
                Action::Start(Daemon::Web { loopback: true }),
            ],
            (Mechanism::NatMissing, Place::Node(n)) => vec![
                nat_rules(n, false)?,
                Action::ConntrackFlush { netns: n.netns() },
            ],
            _ => self.rule_actions(RuleOp::Insert),
        })
    }

    /// The changes that undo [`Part::apply`], in order.
    fn clear(self) -> Result<Vec<Action>, InvalidInventory> {
        Ok(match (self.mechanism, self.place) {
            (Mechanism::Route(kind), _) => {
                let target = self.route_target();
                let commands = match (kind, self.place) {
                    (_, Place::External) => vec![format!("route del {} {target}", route_type(kind))],
                    (RouteKind::Removed, _) => vec![topology::peer_route(NODE_2)],
                    _ => vec![
                        format!("route del {} {target}", route_type(kind)),
                        topology::peer_route(NODE_2),
                    ],
                };
                vec![Action::Ip {
                    netns: self.netns(),
                    commands,
                }]
            }
            (Mechanism::MtuShrink, Place::Node(n)) => vec![
                Action::Ip {
                    netns: n.netns(),
                    commands: vec![format!("link set eth0 mtu {ETH_MTU}")],
                },
                Action::Ip {
                    netns: FABRIC,
                    commands: vec![format!("route del {}/32 dev br-nodes", n.ip())],
                },
                frag_needed_rule(RuleOp::Delete),
            ],
            (Mechanism::ListenerStopped, Place::Pod(p)) => vec![Action::Start(daemon(p, false))],
            (Mechanism::ListenerLoopback, _) => vec![
                Action::Stop(Daemon::Web { loopback: true }),
                Action::Start(Daemon::Web { loopback: false }),
            ],
            (Mechanism::NatMissing, Place::Node(n)) => vec![
                nat_rules(n, true)?,
                Action::ConntrackFlush { netns: n.netns() },
            ],
            _ => self.rule_actions(RuleOp::Delete),
        })
    }

    /// One sentence on what the part changes.
    fn describe(self) -> String {
        let at = self.place;
        match self.mechanism {
            Mechanism::Drop | Mechanism::Reject(_) => {
                let what = match self.protocol {
                    Some(Protocol::Tcp) => "TCP to the web service",
                    _ => "ICMP echoes",
                };
                let how = match self.mechanism {
                    Mechanism::Reject(w) => format!(
                        "rejects ({})",
                        Mechanism::Reject(w).name().trim_start_matches("reject-")
                    ),
                    _ => "drops".to_owned(),
                };
                format!("an iptables rule at {at} {how} {what}")
            }
            Mechanism::Route(kind) => format!(
                "{at}'s route to {} {}",
                self.route_target(),
                match kind {
                    RouteKind::Removed => "is removed".to_owned(),
                    k => format!("becomes a {} route", route_type(k)),
                }
            ),
            Mechanism::MtuShrink => format!(
                "{at}'s eth0 and the fabric's route to it shrink to MTU {SHRUNK_MTU}; the fabric drops its ICMP frag-needed errors"
            ),
            Mechanism::Loss => format!(
                "the fabric drops {COMPOSED_LOSS_PERCENT}% of the packets it forwards {}",
                at.to_string().trim_start_matches("fabric:").replace('-', " ")
            ),
            Mechanism::ListenerStopped => format!("the server in {at} is stopped"),
            Mechanism::ListenerLoopback => {
                format!("the app in {at} is restarted listening on 127.0.0.1:{WEB_PORT}")
            }
            Mechanism::DnsDrop => format!(
                "iptables at {at} drops DNS (UDP and TCP 53) to the cluster DNS pod {}",
                DNS_POD.ip
            ),
            Mechanism::NatMissing => {
                format!("{at} loses its kube-proxy NAT rules (kube-proxy still listed as running)")
            }
        }
    }
}

fn route_type(kind: RouteKind) -> &'static str {
    match kind {
        RouteKind::Blackhole => "blackhole",
        RouteKind::Unreachable => "unreachable",
        RouteKind::Prohibit => "prohibit",
        RouteKind::Removed => "",
    }
}

fn daemon(pod: LabPod, loopback: bool) -> Daemon {
    if pod == DNS_POD {
        Daemon::ClusterDns
    } else {
        Daemon::Web { loopback }
    }
}

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
        .map(String::from)
        .to_vec(),
    }
}

fn nat_rules(node: LabNode, kube_proxy: bool) -> Result<Action, InvalidInventory> {
    Ok(Action::Iptables {
        netns: node.netns(),
        ruleset: node_ruleset(
            node,
            &topology::inventory(false)?,
            NodeRules {
                kube_proxy,
                ..NodeRules::BASELINE
            },
        ),
    })
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mechanism.name())?;
        if let Some(p) = self.protocol {
            write!(f, "/{}", p.name())?;
        }
        write!(f, "@{}", self.place)
    }
}

impl FromStr for Part {
    type Err = InvalidSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (what, place) = s
            .split_once('@')
            .ok_or_else(|| InvalidSpec::NoPlace(s.to_owned()))?;
        let (mechanism, protocol) = match what.split_once('/') {
            Some((m, p)) => (m.parse()?, Some(p.parse()?)),
            None => (what.parse()?, None),
        };
        Part::new(mechanism, protocol, place.parse()?)
    }
}

impl FromStr for Composed {
    type Err = InvalidSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Part>, _>>()?;
        Composed::new(parts)
    }
}

impl fmt::Display for Composed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.parts.iter().map(Part::to_string).collect();
        f.write_str(&names.join(","))
    }
}

fn shown(e: &Expect) -> String {
    match e.cause {
        Some(c) => format!("{}/{c}", e.class),
        None => e.class.to_string(),
    }
}

impl Composed {
    /// A fault of these parts, if they agree on the verdict and change
    /// different namespaces.
    pub fn new(parts: Vec<Part>) -> Result<Composed, InvalidSpec> {
        let first = *parts.first().ok_or(InvalidSpec::Empty)?;
        for (i, a) in parts.iter().enumerate() {
            for b in &parts[i + 1..] {
                if let Some(netns) = a.namespaces().into_iter().find(|n| b.namespaces().contains(n)) {
                    return Err(InvalidSpec::Clash {
                        a: a.to_string(),
                        b: b.to_string(),
                        netns,
                    });
                }
            }
            if a.expect() != first.expect() {
                return Err(InvalidSpec::Disagree {
                    a: first.to_string(),
                    ea: shown(&first.expect()),
                    b: a.to_string(),
                    eb: shown(&a.expect()),
                });
            }
        }
        Ok(Composed { parts })
    }

    /// Every single-part fault that makes sense, in a fixed order.
    pub fn space() -> Vec<Part> {
        let mut all = Vec::new();
        for m in MECHANISMS {
            let protocols: &[Option<Protocol>] = if m.filters() {
                &[Some(Protocol::Icmp), Some(Protocol::Tcp)]
            } else {
                &[None]
            };
            for &proto in protocols {
                for place in places() {
                    if let Ok(p) = Part::new(m, proto, place) {
                        all.push(p);
                    }
                }
            }
        }
        all
    }

    /// The single-part fault `random --seed SEED` picks: the same seed,
    /// the same fault (splitmix64 over [`Composed::space`]).
    pub fn random(seed: u64) -> Composed {
        let space = Composed::space();
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let at = usize::try_from(z % space.len() as u64).unwrap_or(0);
        Composed {
            parts: vec![space[at]],
        }
    }

    /// The parts.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// What `lab fault compose|random` prints.
    pub fn info(&self) -> ComposedInfo {
        let first = self.parts[0];
        let ex = first.exercise();
        let expect = first.expect();
        let symptom = match expect.class {
            Class::NetworkUnreachable => format!("{} gets no echo reply from {}", ex.from, ex.to),
            Class::PortUnreachable => format!(
                "{} answers ping from {}, but TCP to its port fails",
                ex.to, ex.from
            ),
            Class::DnsFailure => format!("from {}, {DNS_NAME} does not resolve through the cluster DNS", ex.from),
            Class::MtuBlackhole => format!(
                "from {}, small packets to {} pass and {}-byte DF packets are lost without an error",
                ex.from, ex.to, ex.size
            ),
            Class::Degraded => format!("{} loses part of its packets to {}", ex.from, ex.to),
            Class::CniFailure => format!("{} reaches the nodes but not the Service {}", ex.from, ex.to),
            Class::Ok | Class::Inconclusive => format!("{} to {}", ex.from, ex.to),
        };
        ComposedInfo {
            name: self.to_string(),
            symptom,
            mechanism: self
                .parts
                .iter()
                .map(|p| p.describe())
                .collect::<Vec<_>>()
                .join("; "),
            observe: ex.observe,
            probe: ProbeRun {
                from: ex.from,
                to: ex.to,
                size: ex.size,
            },
            expect,
        }
    }

    /// The changes that inject the fault into a healthy lab.
    pub fn apply(&self) -> Result<Vec<Action>, InvalidInventory> {
        let mut all = Vec::new();
        for p in &self.parts {
            all.extend(p.apply()?);
        }
        Ok(all)
    }

    /// The changes that restore the baseline, last part first.
    pub fn clear(&self) -> Result<Vec<Action>, InvalidInventory> {
        let mut all = Vec::new();
        for p in self.parts.iter().rev() {
            all.extend(p.clear()?);
        }
        Ok(all)
    }
}

/// A fault the lab can hold: from the catalogue or composed. Its name (as
/// the state file records it) tells them apart: composed names hold `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabFault {
    /// A catalogue fault.
    Catalogue(Fault),
    /// A composed fault.
    Composed(Composed),
}

/// A fault name that is neither in the catalogue nor a valid spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownLabFault {
    /// Not a catalogue name.
    #[error(transparent)]
    Catalogue(#[from] UnknownFault),
    /// Not a valid composed spec.
    #[error(transparent)]
    Composed(#[from] InvalidSpec),
}

impl FromStr for LabFault {
    type Err = UnknownLabFault;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('@') {
            Ok(LabFault::Composed(s.parse()?))
        } else {
            Ok(LabFault::Catalogue(s.parse()?))
        }
    }
}

impl fmt::Display for LabFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabFault::Catalogue(c) => c.fmt(f),
            LabFault::Composed(c) => c.fmt(f),
        }
    }
}

impl LabFault {
    /// The name the state file records.
    pub fn name(&self) -> String {
        self.to_string()
    }
    /// The changes that inject it.
    pub fn apply(&self) -> Result<Vec<Action>, InvalidInventory> {
        match self {
            LabFault::Catalogue(c) => c.apply(),
            LabFault::Composed(c) => c.apply(),
        }
    }
    /// The changes that undo it.
    pub fn clear(&self) -> Result<Vec<Action>, InvalidInventory> {
        match self {
            LabFault::Catalogue(c) => c.clear(),
            LabFault::Composed(c) => c.clear(),
        }
    }
}

#[cfg(test)]
mod tests;
