//! A verdict's path: the test packets' way, step by step, forward then
//! back, as the cloud path analyzers show it (an ordered trace whose
//! failing step names the resource that blocked it). Each [`Step`] says
//! where ([`Step::at`]), what happened there ([`Action`]), what it was
//! observed by ([`Step::source`]) and, on the failing step, what blocked it
//! ([`Resource`]) with the verdict's evidence behind that.
//!
//! Not how a path is found (the coordinator's diagnosis builds it from the
//! captures and checks) and not the wire (the `grpc` module converts).

use std::fmt;

use crate::evidence::{RunCheck, Source, Unsupported, check_ran};

/// Which way a step's packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// From the source towards the target.
    Forward,
    /// The answer, or the error, on its way back.
    Return,
}

impl Leg {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Forward => "forward",
            Leg::Return => "return",
        }
    }
}

/// What happened to the packet at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It left the source.
    Sent,
    /// An observer on the way saw it unchanged.
    Forwarded,
    /// Its destination or source was rewritten (DNAT, masquerade).
    Nated,
    /// It travels inside a tunnel here.
    Encapsulated,
    /// It reached the host or pod it was aimed at.
    Delivered,
    /// The far end answered it (a reply, a SYN-ACK, a UDP answer).
    Answered,
    /// Something refused it: an ICMP error, a reset, a local error.
    Rejected,
    /// It vanished: seen here, never seen further.
    Dropped,
}

impl Action {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Sent => "sent",
            Action::Forwarded => "forwarded",
            Action::Nated => "nated",
            Action::Encapsulated => "encapsulated",
            Action::Delivered => "delivered",
            Action::Answered => "answered",
            Action::Rejected => "rejected",
            Action::Dropped => "dropped",
        }
    }

    /// Whether the packet's way ends here without an answer.
    pub fn fails(self) -> bool {
        matches!(self, Action::Rejected | Action::Dropped)
    }
}

/// What kind of thing blocked a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// A route (or its absence) in a routing table.
    Route,
    /// A firewall rule or policy.
    Rule,
    /// An interface: its state or its MTU.
    Interface,
    /// A NAT chain (kube-proxy's), present, missing or disagreeing.
    NatChain,
    /// A listening socket, or none.
    Listener,
    /// An address on an interface.
    Address,
    /// A DNS resolver or its configuration.
    Resolver,
    /// The ephemeral port range.
    PortRange,
    /// The connection-tracking table.
    Conntrack,
}

impl ResourceKind {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Route => "route",
            ResourceKind::Rule => "rule",
            ResourceKind::Interface => "interface",
            ResourceKind::NatChain => "nat_chain",
            ResourceKind::Listener => "listener",
            ResourceKind::Address => "address",
            ResourceKind::Resolver => "resolver",
            ResourceKind::PortRange => "port_range",
            ResourceKind::Conntrack => "conntrack",
        }
    }
}

/// The thing that blocked a packet, named as an engineer would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// What kind of thing.
    pub kind: ResourceKind,
    /// The route as `ip route` prints it, the interface with its MTU, …
    pub name: String,
}

impl Resource {
    /// A resource of `kind` named `name`.
    pub fn new(kind: ResourceKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// One step of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Which way.
    pub leg: Leg,
    /// An observer (`PROBE/IFACE`, `PROBE`), the address that answered,
    /// or `between A and B` where no observer sat at the failing point.
    pub at: String,
    /// What happened.
    pub action: Action,
    /// The packet, the rewrite or the error, for people.
    pub detail: String,
    /// What blocked it, on a failing step whose blocker the evidence names.
    pub resource: Option<Resource>,
    /// Where it was observed; `None` for a step inferred between observers.
    pub source: Option<Source>,
    /// Indices into the verdict's evidence behind `resource`.
    pub evidence: Vec<usize>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.leg {
            Leg::Forward => "→",
            Leg::Return => "←",
        };
        write!(f, "{arrow} {:<12} {}", self.action.as_str(), self.at)?;
        if !self.detail.is_empty() {
            write!(f, "  {}", self.detail)?;
        }
        if let Some(r) = &self.resource {
            write!(f, "  [{r}]")?;
        }
        Ok(())
    }
}

/// Every step of `path` that is not backed: observed by a check that is
/// not in the run or was skipped, citing evidence the verdict (with
/// `evidence` items) does not have, or naming a blocker without evidence.
pub fn unsupported(path: &[Step], evidence: usize, checks: &[RunCheck<'_>]) -> Vec<Unsupported> {
    let mut out = Vec::new();
    for (step, s) in path.iter().enumerate() {
        if let Some(source) = &s.source
            && let Err(why) = check_ran(checks, source)
        {
            out.push(Unsupported::StepCheckNotRun {
                step,
                cited: source.to_string(),
                why,
            });
        }
        for &index in s.evidence.iter().filter(|i| **i >= evidence) {
            out.push(Unsupported::StepDangling { step, index });
        }
        if let Some(r) = &s.resource
            && s.evidence.is_empty()
        {
            out.push(Unsupported::StepResourceUnbacked {
                step,
                resource: r.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckName, Status};

    #[test]
    fn steps_must_be_observed_and_their_blockers_cited() {
        let check = |name, to: &str| Source::Check {
            name,
            from: "cloudvm-1".into(),
            to: to.into(),
        };
        let checks = [
            RunCheck {
                name: CheckName::Icmp,
                from: "cloudvm-1",
                to: "198.18.0.12",
                status: Status::Fail,
            },
            RunCheck {
                name: CheckName::TcpConnect,
                from: "cloudvm-1",
                to: "198.18.0.12:8080",
                status: Status::Skipped,
            },
        ];
        let step =
            |source: Option<Source>, resource: Option<Resource>, evidence: Vec<usize>| Step {
                leg: Leg::Forward,
                at: "cloudvm-1".into(),
                action: Action::Dropped,
                detail: String::new(),
                resource,
                source,
                evidence,
            };
        let route = || Some(Resource::new(ResourceKind::Route, "198.18.0.0/24 dev eth0"));
        let path = [
            step(
                Some(check(CheckName::Icmp, "198.18.0.12")),
                route(),
                vec![0],
            ),
            step(
                Some(check(CheckName::TcpConnect, "198.18.0.12:8080")),
                None,
                vec![],
            ),
            step(None, route(), vec![]),
            step(None, None, vec![4]),
        ];
        assert_eq!(
            unsupported(&path, 1, &checks),
            vec![
                Unsupported::StepCheckNotRun {
                    step: 1,
                    cited: "check tcp_connect cloudvm-1 → 198.18.0.12:8080".into(),
                    why: "was skipped",
                },
                Unsupported::StepResourceUnbacked {
                    step: 2,
                    resource: "route 198.18.0.0/24 dev eth0".into(),
                },
                Unsupported::StepDangling { step: 3, index: 4 },
            ]
        );
    }

    #[test]
    fn a_failing_step_reads_with_its_blocker() {
        let step = Step {
            leg: Leg::Forward,
            at: "between node-1/eth0 and node-2/eth0".into(),
            action: Action::Dropped,
            detail: "icmp echo 198.18.0.11 > 198.18.0.12 1500 bytes".into(),
            resource: Some(Resource::new(
                ResourceKind::Interface,
                "node-2 eth0 mtu 1400",
            )),
            source: None,
            evidence: vec![0],
        };
        assert!(step.action.fails() && !Action::Delivered.fails());
        assert_eq!(
            step.to_string(),
            "→ dropped      between node-1/eth0 and node-2/eth0  icmp echo 198.18.0.11 > 198.18.0.12 1500 bytes  [interface node-2 eth0 mtu 1400]"
        );
    }
}
