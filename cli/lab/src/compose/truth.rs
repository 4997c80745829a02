//! The ground truth of composed faults: ONE table, [`TRUTH`], from a part's
//! mechanism family and the server its place holds to the verdict
//! (DESIGN §1 class and cause) `meshctl probe` should reach. Nothing else
//! decides an expected verdict; no part has a row of its own.
//! `docs/lab-faults.md` prints the table with the reasons.
//!
//! Pure.

use probemesh_model::verdict::{Cause, Class};

use super::spec::{FragNeeded, Mechanism, Part, Place, Protocol};
use crate::topology::{DNS_POD, WEB_POD};

/// Mechanisms grouped by what they do to the path (the rows' first key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `drop` or any `reject-*` of ICMP echoes.
    FilterIcmp,
    /// `drop` or any `reject-*` of TCP to the web service.
    FilterTcp,
    /// Every `route-*`.
    Route,
    /// `mtu-shrink-frag-filtered`.
    MtuFragFiltered,
    /// `mtu-shrink-frag-allowed`.
    MtuFragAllowed,
    /// `loss`.
    Loss,
    /// `listener-stopped`.
    ListenerStopped,
    /// `listener-loopback`.
    ListenerLoopback,
    /// `dns-drop`.
    DnsDrop,
    /// `dns-refused`, `dns-nxdomain`.
    DnsAnswer,
    /// `nat-missing`, `dnat-wrong-port`, `dnat-missing-pod`: one node's
    /// Service NAT is not the Service's.
    NodeNat,
    /// `conntrack-full`.
    ConntrackFull,
    /// `second-address`.
    SecondAddress,
    /// `link-down`.
    LinkDown,
}

/// The server a place holds (the rows' second key): it decides the
/// verdict only where a mechanism stops a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Any place the part is accepted at.
    Anywhere,
    /// pod:web-0, the web app.
    WebPod,
    /// pod:dns-0, the cluster DNS.
    DnsPod,
}

/// One row of the ground-truth table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruthRow {
    /// The mechanism family.
    pub family: Family,
    /// The place's scope; [`Scope::Anywhere`] rows apply where no more
    /// specific row does.
    pub scope: Scope,
    /// Expected verdict class.
    pub class: Class,
    /// Expected cause.
    pub cause: Option<Cause>,
    /// Why this is the truth (DESIGN §1's definitions).
    pub why: &'static str,
}

const fn row(
    family: Family,
    scope: Scope,
    class: Class,
    cause: Option<Cause>,
    why: &'static str,
) -> TruthRow {
    TruthRow {
        family,
        scope,
        class,
        cause,
        why,
    }
}

/// The ground truth of every composed part.
pub const TRUTH: [TruthRow; 15] = [
    row(
        Family::FilterIcmp,
        Scope::Anywhere,
        Class::NetworkUnreachable,
        Some(Cause::Firewall),
        "a rule drops or rejects the echoes (an ICMP error made by a rule is still a rule): ping fails and a firewall is the reason",
    ),
    row(
        Family::FilterTcp,
        Scope::Anywhere,
        Class::PortUnreachable,
        Some(Cause::Filtered),
        "ping passes; a rule drops or rejects the connection: a RST or ICMP error made by a rule is not a closed port, even in the destination's own namespace",
    ),
    row(
        Family::Route,
        Scope::Anywhere,
        Class::NetworkUnreachable,
        Some(Cause::Routing),
        "no usable route for the request or its reply (blackhole, unreachable, prohibit or deleted)",
    ),
    row(
        Family::MtuFragFiltered,
        Scope::Anywhere,
        Class::MtuBlackhole,
        None,
        "the path MTU falls to 1440 below the sender's 1500 and the frag-needed errors are dropped: small packets pass, large ones vanish",
    ),
    row(
        Family::MtuFragAllowed,
        Scope::Anywhere,
        Class::Ok,
        None,
        "the path MTU falls to 1440 but the router's frag-needed errors reach the sender, so path-MTU discovery works: a DF ping above 1412 bytes is answered by frag-needed (mtu 1440), TCP adapts; nothing is broken (a near miss of mtu_blackhole)",
    ),
    row(
        Family::Loss,
        Scope::Anywhere,
        Class::Degraded,
        Some(Cause::Loss),
        "the path works but loses a fifth of the packets, in one direction",
    ),
    row(
        Family::ListenerStopped,
        Scope::WebPod,
        Class::PortUnreachable,
        Some(Cause::Refused),
        "nothing listens on 8080: web-0's own kernel answers RST",
    ),
    row(
        Family::ListenerStopped,
        Scope::DnsPod,
        Class::DnsFailure,
        Some(Cause::DnsServiceDown),
        "the cluster DNS server is gone; addresses and the upstream DNS still work",
    ),
    row(
        Family::ListenerLoopback,
        Scope::WebPod,
        Class::PortUnreachable,
        Some(Cause::LoopbackOnly),
        "the app listens on 127.0.0.1:8080 only",
    ),
    row(
        Family::DnsDrop,
        Scope::Anywhere,
        Class::DnsFailure,
        Some(Cause::DnsUnreachable),
        "the cluster DNS runs but client-3's queries never reach it, while the upstream DNS answers the pod",
    ),
    row(
        Family::DnsAnswer,
        Scope::Anywhere,
        Class::DnsFailure,
        Some(Cause::DnsServiceDown),
        "the cluster DNS runs and answers, but REFUSED or NXDOMAIN for web.default.svc.cluster.local, a Service the cluster has: the DNS service does not serve the cluster's names",
    ),
    row(
        Family::NodeNat,
        Scope::Anywhere,
        Class::CniFailure,
        Some(Cause::KubeProxyRulesMissing),
        "node-to-node and pod addresses work; this node lacks the Service NAT rule the Service needs (none at all, or a stale DNAT to a wrong port or a gone pod) while the other nodes have it",
    ),
    row(
        Family::ConntrackFull,
        Scope::Anywhere,
        Class::NetworkUnreachable,
        Some(Cause::Overload),
        "the node's conntrack table is full: every new flow through or to it is dropped",
    ),
    row(
        Family::SecondAddress,
        Scope::Anywhere,
        Class::CniFailure,
        Some(Cause::OverlaySourceMismatch),
        "VXLAN leaves from the second address, which the other nodes do not accept as a peer (reference incident 1)",
    ),
    row(
        Family::LinkDown,
        Scope::Anywhere,
        Class::NetworkUnreachable,
        Some(Cause::Link),
        "web-0's veth is down: packets reach node-2 and never reach the pod (ARP fails on cni0)",
    ),
];

impl Part {
    /// The part's family (the first key of [`TRUTH`]).
    pub fn family(self) -> Family {
        match (self.mechanism(), self.protocol()) {
            (Mechanism::Drop | Mechanism::Reject(_), Some(Protocol::Tcp)) => Family::FilterTcp,
            (Mechanism::Drop | Mechanism::Reject(_), _) => Family::FilterIcmp,
            (Mechanism::Route(_), _) => Family::Route,
            (Mechanism::MtuShrink(FragNeeded::Filtered), _) => Family::MtuFragFiltered,
            (Mechanism::MtuShrink(FragNeeded::Allowed), _) => Family::MtuFragAllowed,
            (Mechanism::Loss, _) => Family::Loss,
            (Mechanism::ListenerStopped, _) => Family::ListenerStopped,
            (Mechanism::ListenerLoopback, _) => Family::ListenerLoopback,
            (Mechanism::DnsDrop, _) => Family::DnsDrop,
            (Mechanism::DnsAnswer(_), _) => Family::DnsAnswer,
            (Mechanism::NatMissing | Mechanism::DnatWrongPort | Mechanism::DnatMissingPod, _) => {
                Family::NodeNat
            }
            (Mechanism::ConntrackFull, _) => Family::ConntrackFull,
            (Mechanism::SecondAddress, _) => Family::SecondAddress,
            (Mechanism::LinkDown, _) => Family::LinkDown,
        }
    }

    /// The scope of the part's place (the second key of [`TRUTH`]).
    pub fn scope(self) -> Scope {
        match self.place() {
            Place::Pod(p) if p == WEB_POD => Scope::WebPod,
            Place::Pod(p) if p == DNS_POD => Scope::DnsPod,
            _ => Scope::Anywhere,
        }
    }

    /// The row of [`TRUTH`] that gives the part's verdict: the one for its
    /// family and scope, else its family's [`Scope::Anywhere`] row. `None`:
    /// the part has no single honest verdict (composing refuses it).
    pub fn truth(self) -> Option<&'static TruthRow> {
        let (family, scope) = (self.family(), self.scope());
        TRUTH
            .iter()
            .find(|r| r.family == family && r.scope == scope)
            .or_else(|| {
                TRUTH
                    .iter()
                    .find(|r| r.family == family && r.scope == Scope::Anywhere)
            })
    }
}
