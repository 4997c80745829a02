//! The verdict classes of DESIGN §1 and the causes each tells apart, as
//! enums: the compiler checks that a rule, the lab's fault catalogue or a
//! metric label names a real class, and that a cause belongs to its class.
//! Their snake_case strings (`as_str`, serde) are stable API
//! (`meshctl probe -o json`, `meshctl lab fault --list`, metric labels).
//!
//! Not the rules that choose a verdict (the coordinator's diagnosis) and not
//! the wire enums (`probemesh_proto::pb::VerdictClass`; conversions in the `grpc` module).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A DESIGN §1 fault class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Everything asked for works.
    Ok,
    /// Ping fails.
    NetworkUnreachable,
    /// Ping works, TCP to the port fails.
    PortUnreachable,
    /// IPs work, names don't.
    DnsFailure,
    /// Small packets and the handshake work, large packets are lost.
    MtuBlackhole,
    /// Node to node works, pod and Service addresses don't.
    CniFailure,
    /// The path works but loses packets or is slow.
    Degraded,
    /// Not enough evidence.
    Inconclusive,
}

/// A DESIGN §1 cause: which of its class's explanations holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// `network_unreachable`: dropped at the source or destination.
    Firewall,
    /// `network_unreachable`: no or wrong route, asymmetric return.
    Routing,
    /// `network_unreachable`: conntrack table full, queue drops, load.
    Overload,
    /// `network_unreachable`: packets leave A and never reach B.
    Link,
    /// `port_unreachable`: nothing listening (RST).
    Refused,
    /// `port_unreachable`: the app listens on 127.0.0.1.
    LoopbackOnly,
    /// `port_unreachable`: a rule drops or rejects the connection.
    Filtered,
    /// `port_unreachable`: no source port left.
    PortExhaustion,
    /// `port_unreachable`: the listen backlog overflows.
    BacklogOverflow,
    /// `dns_failure`: bad resolv.conf.
    PodDnsConfig,
    /// `dns_failure`: the cluster DNS does not answer.
    DnsServiceDown,
    /// `dns_failure`: the pod cannot reach cluster DNS, upstream answers.
    DnsUnreachable,
    /// `cni_failure`: no Service NAT rules on the node.
    KubeProxyRulesMissing,
    /// `cni_failure`: the node's pod CIDR is used up.
    PodCidrExhausted,
    /// `cni_failure`: encapsulated from an address that is not the node's.
    OverlaySourceMismatch,
    /// `degraded`: packets lost (from a hop on).
    Loss,
    /// `degraded`: slow or jittery.
    Latency,
}

impl Class {
    /// Every class, in DESIGN §1's order.
    pub const ALL: [Class; 8] = [
        Class::Ok,
        Class::NetworkUnreachable,
        Class::PortUnreachable,
        Class::DnsFailure,
        Class::MtuBlackhole,
        Class::CniFailure,
        Class::Degraded,
        Class::Inconclusive,
    ];

    /// The contract's string.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::NetworkUnreachable => "network_unreachable",
            Class::PortUnreachable => "port_unreachable",
            Class::DnsFailure => "dns_failure",
            Class::MtuBlackhole => "mtu_blackhole",
            Class::CniFailure => "cni_failure",
            Class::Degraded => "degraded",
            Class::Inconclusive => "inconclusive",
        }
    }

    /// The causes this class tells apart (none for `ok`, `mtu_blackhole`,
    /// `inconclusive`).
    pub fn causes(self) -> impl Iterator<Item = Cause> {
        Cause::ALL.into_iter().filter(move |c| c.class() == self)
    }

    /// Whether a verdict of this class names a fault (not `ok`, not
    /// `inconclusive`).
    pub fn is_fault(self) -> bool {
        !matches!(self, Class::Ok | Class::Inconclusive)
    }
}

impl Cause {
    /// Every cause, in DESIGN §1's order.
    pub const ALL: [Cause; 17] = [
        Cause::Firewall,
        Cause::Routing,
        Cause::Overload,
        Cause::Link,
        Cause::Refused,
        Cause::LoopbackOnly,
        Cause::Filtered,
        Cause::PortExhaustion,
        Cause::BacklogOverflow,
        Cause::PodDnsConfig,
        Cause::DnsServiceDown,
        Cause::DnsUnreachable,
        Cause::KubeProxyRulesMissing,
        Cause::PodCidrExhausted,
        Cause::OverlaySourceMismatch,
        Cause::Loss,
        Cause::Latency,
    ];

    /// The class this cause explains.
    pub fn class(self) -> Class {
        match self {
            Cause::Firewall | Cause::Routing | Cause::Overload | Cause::Link => {
                Class::NetworkUnreachable
            }
            Cause::Refused
            | Cause::LoopbackOnly
            | Cause::Filtered
            | Cause::PortExhaustion
            | Cause::BacklogOverflow => Class::PortUnreachable,
            Cause::PodDnsConfig | Cause::DnsServiceDown | Cause::DnsUnreachable => {
                Class::DnsFailure
            }
            Cause::KubeProxyRulesMissing
            | Cause::PodCidrExhausted
            | Cause::OverlaySourceMismatch => Class::CniFailure,
            Cause::Loss | Cause::Latency => Class::Degraded,
        }
    }

    /// The contract's string.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Firewall => "firewall",
            Cause::Routing => "routing",
            Cause::Overload => "overload",
            Cause::Link => "link",
            Cause::Refused => "refused",
            Cause::LoopbackOnly => "loopback_only",
            Cause::Filtered => "filtered",
            Cause::PortExhaustion => "port_exhaustion",
            Cause::BacklogOverflow => "backlog_overflow",
            Cause::PodDnsConfig => "pod_dns_config",
            Cause::DnsServiceDown => "dns_service_down",
            Cause::DnsUnreachable => "dns_unreachable",
            Cause::KubeProxyRulesMissing => "kube_proxy_rules_missing",
            Cause::PodCidrExhausted => "pod_cidr_exhausted",
            Cause::OverlaySourceMismatch => "overlay_source_mismatch",
            Cause::Loss => "loss",
            Cause::Latency => "latency",
        }
    }
}

/// A string that names no DESIGN §1 class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown verdict class {0:?}")]
pub struct UnknownClass(pub String);

/// A string that names no DESIGN §1 cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown verdict cause {0:?}")]
pub struct UnknownCause(pub String);

impl FromStr for Class {
    type Err = UnknownClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Class::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownClass(s.to_owned()))
    }
}

impl FromStr for Cause {
    type Err = UnknownCause;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cause::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCause(s.to_owned()))
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for c in Class::ALL {
            assert_eq!(c.as_str().parse::<Class>(), Ok(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for c in Cause::ALL {
            assert_eq!(c.as_str().parse::<Cause>(), Ok(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert!("timeout".parse::<Class>().is_err());
        assert!("mtu-blackhole".parse::<Class>().is_err());
    }

    #[test]
    fn classes_and_causes_are_checked_together() {
        assert_eq!(Cause::DnsUnreachable.class(), Class::DnsFailure);
        assert!(
            Class::DnsFailure
                .causes()
                .any(|c| c == Cause::DnsUnreachable)
        );
        assert!(!Class::DnsFailure.causes().any(|c| c == Cause::Loss));
        assert_eq!(Class::MtuBlackhole.causes().count(), 0);
        assert_eq!(
            Class::NetworkUnreachable
                .causes()
                .map(Cause::as_str)
                .collect::<Vec<_>>(),
            ["firewall", "routing", "overload", "link"]
        );
    }
}
