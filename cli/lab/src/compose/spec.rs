//! The grammar of a composed part, `MECHANISM[/PROTOCOL]@PLACE`: the
//! mechanisms, protocols and places as types, their canonical names (parse
//! and display round-trip), and the refusals: a part that makes no sense,
//! that would cut a probe's own control link, or that has no single honest
//! verdict is refused with the reason and the way out.
//!
//! Pure. What a part changes is `actions`, its verdict `truth`, its probe
//! run `exercise`.

use std::fmt;
use std::str::FromStr;

pub use crate::topology::BrokenDns;
use crate::topology::{
    CLIENT_POD, CLOUDVM, DNS_POD, LabNode, LabPod, NODE_2, NODES, PODS, WEB_POD,
};

/// How a part breaks the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// An iptables rule drops the packets silently.
    Drop,
    /// An iptables rule rejects them (`-j REJECT --reject-with`).
    Reject(RejectWith),
    /// The route towards the destination is replaced or removed.
    Route(RouteKind),
    /// A node's eth0 and the fabric's route to it shrink to MTU 1440,
    /// with the fabric router's ICMP frag-needed errors filtered or allowed.
    MtuShrink(FragNeeded),
    /// The fabric drops a fifth of the packets at random, one direction.
    Loss,
    /// The server in a pod is stopped.
    ListenerStopped,
    /// The web app is restarted listening on 127.0.0.1 only.
    ListenerLoopback,
    /// iptables drops DNS (UDP and TCP 53) towards the cluster DNS.
    DnsDrop,
    /// The cluster DNS is restarted answering every cluster name wrongly
    /// (REFUSED, or NXDOMAIN).
    DnsAnswer(BrokenDns),
    /// A node's NAT rules for the Services are gone (kube-proxy still
    /// listed as running).
    NatMissing,
    /// A node's DNAT for `default/web` points at the pod on a wrong port.
    DnatWrongPort,
    /// A node's DNAT for `default/web` points at a pod address nobody has.
    DnatMissingPod,
    /// A node's conntrack table is full.
    ConntrackFull,
    /// A node's NIC gains a second address and flannel sends VXLAN from it.
    SecondAddress,
    /// An interface on the path is set down.
    LinkDown,
}

/// What a reject rule answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectWith {
    /// ICMP destination unreachable, code 0.
    NetUnreachable,
    /// ICMP destination unreachable, code 1.
    HostUnreachable,
    /// ICMP destination unreachable, code 3.
    PortUnreachable,
    /// ICMP destination unreachable, code 2.
    ProtoUnreachable,
    /// ICMP destination unreachable, code 9.
    NetProhibited,
    /// ICMP destination unreachable, code 10.
    HostProhibited,
    /// ICMP destination unreachable, code 13.
    AdminProhibited,
    /// A TCP RST (TCP only).
    TcpReset,
}

/// Every reject answer, in `--reject-with` order.
pub const REJECTS: [RejectWith; 8] = [
    RejectWith::NetUnreachable,
    RejectWith::HostUnreachable,
    RejectWith::PortUnreachable,
    RejectWith::ProtoUnreachable,
    RejectWith::NetProhibited,
    RejectWith::HostProhibited,
    RejectWith::AdminProhibited,
    RejectWith::TcpReset,
];

impl RejectWith {
    /// The name after `reject-` and the `--reject-with` value.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            RejectWith::NetUnreachable => ("net-unreachable", "icmp-net-unreachable"),
            RejectWith::HostUnreachable => ("host-unreachable", "icmp-host-unreachable"),
            RejectWith::PortUnreachable => ("port-unreachable", "icmp-port-unreachable"),
            RejectWith::ProtoUnreachable => ("proto-unreachable", "icmp-proto-unreachable"),
            RejectWith::NetProhibited => ("net-prohibited", "icmp-net-prohibited"),
            RejectWith::HostProhibited => ("host-prohibited", "icmp-host-prohibited"),
            RejectWith::AdminProhibited => ("admin-prohibited", "icmp-admin-prohibited"),
            RejectWith::TcpReset => ("tcp-reset", "tcp-reset"),
        }
    }
}

/// The route a `route-*` mechanism leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `blackhole`: packets vanish (a local sender gets EINVAL).
    Blackhole,
    /// `unreachable`: ICMP host unreachable (EHOSTUNREACH locally).
    Unreachable,
    /// `prohibit`: ICMP administratively prohibited (EACCES locally).
    Prohibit,
    /// The route is deleted: packets follow the default route into the
    /// fabric, which drops what it cannot route.
    Removed,
}

impl RouteKind {
    /// The `ip route` type, empty for a removed route.
    pub fn route_type(self) -> &'static str {
        match self {
            RouteKind::Blackhole => "blackhole",
            RouteKind::Unreachable => "unreachable",
            RouteKind::Prohibit => "prohibit",
            RouteKind::Removed => "",
        }
    }
}

/// Whether the fabric router's ICMP frag-needed errors reach the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragNeeded {
    /// Dropped by the fabric's firewall: path-MTU discovery cannot work.
    Filtered,
    /// Let through: the sender learns the smaller MTU.
    Allowed,
}

/// The traffic a filtering part matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// ICMP echo requests (on a return path: echo replies).
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

const HOOKS: [Hook; 3] = [Hook::Input, Hook::Output, Hook::Forward];

impl Hook {
    /// The iptables chain.
    pub fn chain(self) -> &'static str {
        match self {
            Hook::Input => "INPUT",
            Hook::Output => "OUTPUT",
            Hook::Forward => "FORWARD",
        }
    }
}

/// Where a part is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The fabric router, on packets it forwards towards the node.
    FabricTo(LabNode),
    /// The fabric router, on packets it forwards from the node (the return
    /// direction).
    FabricFrom(LabNode),
    /// A node as a whole: its links, routing table, NAT rules, conntrack.
    Node(LabNode),
    /// One netfilter hook of a node.
    NodeHook(LabNode, Hook),
    /// A pod's namespace.
    Pod(LabPod),
    /// The external host `cloudvm-1`.
    External,
}

/// Every mechanism, in a fixed order (the order of the space).
pub fn mechanisms() -> Vec<Mechanism> {
    let mut all = vec![Mechanism::Drop];
    all.extend(REJECTS.map(Mechanism::Reject));
    all.extend(
        [
            RouteKind::Blackhole,
            RouteKind::Unreachable,
            RouteKind::Prohibit,
            RouteKind::Removed,
        ]
        .map(Mechanism::Route),
    );
    all.extend([
        Mechanism::MtuShrink(FragNeeded::Filtered),
        Mechanism::MtuShrink(FragNeeded::Allowed),
        Mechanism::Loss,
        Mechanism::ListenerStopped,
        Mechanism::ListenerLoopback,
        Mechanism::DnsDrop,
        Mechanism::DnsAnswer(BrokenDns::Refused),
        Mechanism::DnsAnswer(BrokenDns::NxDomain),
        Mechanism::NatMissing,
        Mechanism::DnatWrongPort,
        Mechanism::DnatMissingPod,
        Mechanism::ConntrackFull,
        Mechanism::SecondAddress,
        Mechanism::LinkDown,
    ]);
    all
}

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

impl Mechanism {
    /// The spec name.
    pub fn name(self) -> String {
        match self {
            Mechanism::Reject(w) => format!("reject-{}", w.names().0),
            Mechanism::Route(k) => match k {
                RouteKind::Removed => "route-removed".to_owned(),
                k => format!("route-{}", k.route_type()),
            },
            Mechanism::DnsAnswer(a) => format!("dns-{}", a.rcode().to_lowercase()),
            m => m.plain_name().to_owned(),
        }
    }

    fn plain_name(self) -> &'static str {
        match self {
            Mechanism::Drop => "drop",
            Mechanism::MtuShrink(FragNeeded::Filtered) => "mtu-shrink-frag-filtered",
            Mechanism::MtuShrink(FragNeeded::Allowed) => "mtu-shrink-frag-allowed",
            Mechanism::Loss => "loss",
            Mechanism::ListenerStopped => "listener-stopped",
            Mechanism::ListenerLoopback => "listener-loopback",
            Mechanism::DnsDrop => "dns-drop",
            Mechanism::NatMissing => "nat-missing",
            Mechanism::DnatWrongPort => "dnat-wrong-port",
            Mechanism::DnatMissingPod => "dnat-missing-pod",
            Mechanism::ConntrackFull => "conntrack-full",
            Mechanism::SecondAddress => "second-address",
            Mechanism::LinkDown => "link-down",
            Mechanism::Reject(_) | Mechanism::Route(_) | Mechanism::DnsAnswer(_) => "",
        }
    }

    /// Whether the mechanism is an iptables filter rule on one protocol.
    pub fn filters(self) -> bool {
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

impl Protocol {
    /// The spec name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Icmp => "icmp",
            Protocol::Tcp => "tcp",
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

/// A spec `meshctl lab fault compose` refuses (exit 2, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    /// Nothing given.
    #[error(
        "an empty fault spec; write MECHANISM[/PROTOCOL]@PLACE[,...], e.g. drop/icmp@node-2:input (`meshctl lab fault compose --list` shows every part)"
    )]
    Empty,
    /// A part without `@PLACE`.
    #[error("'{0}' has no @PLACE; write MECHANISM[/PROTOCOL]@PLACE, e.g. drop/icmp@node-2:input")]
    NoPlace(String),
    /// An unknown mechanism.
    #[error("unknown mechanism '{0}'; the mechanisms are: {list}", list = mechanisms().iter().map(|m| m.name()).collect::<Vec<_>>().join(", "))]
    UnknownMechanism(String),
    /// An unknown protocol.
    #[error("unknown protocol '{0}'; the protocols are: icmp, tcp (after drop or reject-*)")]
    UnknownProtocol(String),
    /// An unknown place.
    #[error("unknown place '{0}'; the places are: {list}", list = places().iter().map(Place::to_string).collect::<Vec<_>>().join(", "))]
    UnknownPlace(String),
    /// A combination that does not make sense.
    #[error("'{part}' is refused: {reason}")]
    Refused {
        /// The part as given.
        part: String,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// Two parts change the same namespace.
    #[error(
        "'{a}' and '{b}' both change {netns}; give each namespace one part so that clearing undoes each exactly"
    )]
    Clash {
        /// One part.
        a: String,
        /// The other.
        b: String,
        /// The namespace both change.
        netns: &'static str,
    },
    /// Two parts that would each call for a different verdict.
    #[error(
        "'{a}' means {ea} but '{b}' means {eb}; compose parts of one verdict (so that every symptom has one cause)"
    )]
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

impl FromStr for Mechanism {
    type Err = InvalidSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        mechanisms()
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| InvalidSpec::UnknownMechanism(s.to_owned()))
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

impl FromStr for Place {
    type Err = InvalidSpec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        places()
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| InvalidSpec::UnknownPlace(s.to_owned()))
    }
}

/// One part of a composed fault: a mechanism, the protocol it filters
/// (filtering mechanisms only) and the place it is made at. Only
/// [`Part::new`] (and parsing) makes one, so every part is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    mechanism: Mechanism,
    protocol: Option<Protocol>,
    place: Place,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.mechanism.name())?;
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

impl Part {
    /// The part, if it makes sense; the error names the reason and what to
    /// use instead. Filtering mechanisms get their default protocol (`icmp`;
    /// `tcp` for `reject-tcp-reset`) when none is given.
    pub fn new(
        mechanism: Mechanism,
        protocol: Option<Protocol>,
        place: Place,
    ) -> Result<Part, InvalidSpec> {
        let given = protocol.is_some();
        let protocol = protocol.or(mechanism.default_protocol());
        let part = Part {
            mechanism,
            protocol,
            place,
        };
        let reason = if given && !mechanism.filters() {
            Some(
                "only drop and reject-* take a /PROTOCOL; the other mechanisms define their own traffic",
            )
        } else {
            part.refusal()
        };
        reason.map_or(Ok(part), |reason| {
            Err(InvalidSpec::Refused {
                part: part.to_string(),
                reason,
            })
        })
    }

    /// How it breaks.
    pub fn mechanism(self) -> Mechanism {
        self.mechanism
    }
    /// What it filters (filtering mechanisms only).
    pub fn protocol(self) -> Option<Protocol> {
        self.protocol
    }
    /// Where.
    pub fn place(self) -> Place {
        self.place
    }

    /// Why this part is refused, if it is.
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
            (M::Drop | M::Reject(_), Some(Tcp), P::NodeHook(_, Hook::Input | Hook::Output)) => {
                Some(
                    "TCP to the NodePort is DNATed in PREROUTING and forwarded to web-0, never delivered to INPUT nor sent from OUTPUT: place it at node-N:forward",
                )
            }
            (M::Drop | M::Reject(_), Some(Tcp), P::Pod(p)) if p != WEB_POD => {
                Some("only pod:web-0 serves TCP in the lab: use pod:web-0")
            }
            (M::Drop | M::Reject(_), _, _) => None,
            (M::Route(RouteKind::Removed), _, P::External) => Some(
                "cloudvm-1 reaches the lab through its default route only, which also carries its probe's control link (a probe cut off cannot report): use route-blackhole, route-unreachable or route-prohibit there",
            ),
            (M::Route(_), _, P::Node(_) | P::External) => None,
            (M::Route(_), _, _) => Some(
                "routes are a node's (node-N) or cloudvm-1's; the fabric's routes also carry the probes' control links, and a probe cut off cannot report",
            ),
            (M::MtuShrink(_), _, P::Node(_)) => None,
            (M::MtuShrink(_), _, _) => {
                Some("an MTU shrink is made on a node's link: place it at node-1, node-2 or node-3")
            }
            (M::Loss, _, P::FabricTo(_) | P::FabricFrom(_)) => None,
            (M::Loss, _, _) => Some(
                "loss is made on the fabric router in one direction: fabric:to-node-N or fabric:from-node-N",
            ),
            (M::ListenerStopped, _, P::Pod(p)) if p == WEB_POD || p == DNS_POD => None,
            (M::ListenerStopped, _, _) => {
                Some("listeners run in pod:web-0 (the web app) and pod:dns-0 (the cluster DNS)")
            }
            (M::ListenerLoopback, _, P::Pod(p)) if p == WEB_POD => None,
            (M::ListenerLoopback, _, _) => {
                Some("only the web app can be moved to loopback: use pod:web-0")
            }
            (M::DnsDrop, _, P::Pod(p)) if p == CLIENT_POD || p == DNS_POD => None,
            (M::DnsDrop, _, P::NodeHook(n, Hook::Forward))
                if n == CLIENT_POD.node || n == DNS_POD.node =>
            {
                None
            }
            (M::DnsDrop, _, _) => Some(
                "DNS is dropped on the way from client-3 to the cluster DNS: at pod:client-3, node-3:forward (the client's node), node-1:forward (the DNS pod's node) or pod:dns-0; the upstream is refused because a silent upstream has no single verdict (down or filtered look alike, and cluster names still resolve)",
            ),
            (M::DnsAnswer(_), _, P::Pod(p)) if p == DNS_POD => None,
            (M::DnsAnswer(_), _, _) => Some(
                "only the cluster DNS answers cluster names: use pod:dns-0 (the upstream is never asked for them, and a client pod answers nobody)",
            ),
            (
                M::NatMissing
                | M::DnatWrongPort
                | M::DnatMissingPod
                | M::ConntrackFull
                | M::SecondAddress,
                _,
                P::Node(_),
            ) => None,
            (
                M::NatMissing
                | M::DnatWrongPort
                | M::DnatMissingPod
                | M::ConntrackFull
                | M::SecondAddress,
                _,
                _,
            ) => Some("this is a node's own state: place it at node-1, node-2 or node-3"),
            (M::LinkDown, _, P::Pod(p)) if p == WEB_POD => None,
            (M::LinkDown, _, _) => Some(
                "the only link no probe's control link uses and whose loss has one verdict is web-0's veth on node-2: use link-down@pod:web-0 (a node's eth0 or the fabric's ports carry the probes' control links; a down overlay deletes its routes, which is routing)",
            ),
        }
    }
}

/// The node a node-bound place is on, if any.
pub fn node_of(place: Place) -> Option<LabNode> {
    match place {
        Place::FabricTo(n) | Place::FabricFrom(n) | Place::Node(n) | Place::NodeHook(n, _) => {
            Some(n)
        }
        Place::Pod(p) => Some(p.node),
        Place::External => None,
    }
}

/// The pod living on `node` (each node runs one).
pub fn pod_on(node: LabNode) -> LabPod {
    PODS.into_iter().find(|p| p.node == node).unwrap_or(WEB_POD)
}

/// A node that is not `node` (to reach `node`'s pods through the overlay).
pub fn other_node(node: LabNode) -> LabNode {
    if node == NODES[0] { NODE_2 } else { NODES[0] }
}
