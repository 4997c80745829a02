//! The diagnosis's typed model: a [`Check`] with its name, direction and
//! status as enums (never the contract's strings) and what its task
//! observed as an [`Observation`]; an [`ObserverInterface`] where the
//! captures say `PROBE/IFACE`. Checks are built once, in
//! `checks::summarize` (the module above this one), from the plan and the
//! probe's task result (`Observation::try_from`, an [`InvalidResult`] when
//! the result is no observation); [`Check::to_pb`] is the one way back to
//! the wire, for the run record.
//!
//! Not the rules (they read this model) and not the wire's compatibility
//! with older records (`probemesh_proto::compat`).

use std::fmt;

use probemesh_model::check::{CheckName, Direction, Status};
use probemesh_proto::identity::ProbeName;
use probemesh_proto::pb;
use probemesh_proto::pb::task_result::Outcome;

/// One check of a diagnosis, as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Which check.
    pub name: CheckName,
    /// Who ran it: `PROBE` or `PROBE@pod:NS/NAME`.
    pub from: String,
    /// What it was aimed at, for people (`host`, `host:port`, `host (…)`).
    pub to: String,
    /// ICMP payload, bytes, where it applies.
    pub size: u32,
    /// Which way it went.
    pub direction: Direction,
    /// How it ended.
    pub status: Status,
    /// Attempts made (echoes, connects).
    pub sent: u32,
    /// Attempts answered.
    pub received: u32,
    /// Round trips, milliseconds; `None` when nothing came back.
    pub rtt_ms: Option<Rtt>,
    /// One line for people.
    pub detail: String,
    /// What the task observed, read from `result`.
    pub observation: Option<Observation>,
    /// The probe's raw result, kept for the run record (absent when
    /// skipped before it ran).
    pub result: Option<pb::TaskResult>,
}

/// What a check's task observed, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// ICMP echoes.
    Ping(pb::PingSummary),
    /// TCP connects.
    Tcping(pb::TcpingSummary),
    /// A transfer (or a connect to the probe responder).
    Transfer(pb::TcpTransferResult),
    /// A path MTU search.
    Pmtu(pb::PmtuResult),
    /// mtr-style hops.
    Trace(pb::TraceResult),
    /// Resolutions.
    Dns(pb::DnsResult),
    /// What listens.
    Listener(pb::ListenerResult),
    /// A node's interfaces, routes, tunnels, conntrack, NAT rules.
    NodeFacts(Box<pb::NodeFacts>),
}

/// A task result that is no observation: the check is reported skipped,
/// with this as its detail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidResult {
    /// The result has no outcome.
    #[error("no result came back")]
    Missing,
    /// The task failed to run (probe not connected, no privilege).
    #[error("could not run: {0}")]
    Failed(String),
    /// An outcome no diagnosis check asks for.
    #[error("unexpected result {0}")]
    Unexpected(String),
}

impl TryFrom<&pb::TaskResult> for Observation {
    type Error = InvalidResult;

    fn try_from(r: &pb::TaskResult) -> Result<Self, InvalidResult> {
        Ok(match r.outcome.as_ref().ok_or(InvalidResult::Missing)? {
            Outcome::Error(e) => return Err(InvalidResult::Failed(e.message.clone())),
            Outcome::Ping(p) => Observation::Ping(p.clone()),
            Outcome::Tcping(t) => Observation::Tcping(t.clone()),
            Outcome::TcpTransfer(t) => Observation::Transfer(t.clone()),
            Outcome::Pmtu(p) => Observation::Pmtu(p.clone()),
            Outcome::Trace(t) => Observation::Trace(t.clone()),
            Outcome::Dns(d) => Observation::Dns(d.clone()),
            Outcome::Listener(l) => Observation::Listener(l.clone()),
            Outcome::NodeFacts(f) => Observation::NodeFacts(Box::new(f.clone())),
            other => return Err(InvalidResult::Unexpected(format!("{other:?}"))),
        })
    }
}

/// Round-trip statistics, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtt {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Slowest.
    pub max: f64,
}

impl Check {
    /// Whether it ran (passed or failed).
    pub fn ran(&self) -> bool {
        self.status != Status::Skipped
    }

    /// Whether it ran and passed.
    pub fn ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// Whether it ran and failed.
    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }

    /// Where it ran, for people: the pod (`NS/NAME`) when it ran inside
    /// one, else the probe.
    pub fn place(&self) -> &str {
        self.from
            .split_once("@pod:")
            .map_or(self.from.as_str(), |(_, pod)| pod)
    }

    /// Whether it is aimed at `host` (`host`, `host:port`, `host (…)`).
    pub fn aimed_at(&self, host: &str) -> bool {
        self.to
            .strip_prefix(host)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with(' '))
    }

    /// The ping summary, if it is an ICMP check that ran.
    pub fn ping(&self) -> Option<&pb::PingSummary> {
        match self.observation.as_ref()? {
            Observation::Ping(p) => Some(p),
            _ => None,
        }
    }

    /// The TCP connect summary, if it is one.
    pub fn tcping(&self) -> Option<&pb::TcpingSummary> {
        match self.observation.as_ref()? {
            Observation::Tcping(t) => Some(t),
            _ => None,
        }
    }

    /// The transfer result, if it is one.
    pub fn transfer(&self) -> Option<&pb::TcpTransferResult> {
        match self.observation.as_ref()? {
            Observation::Transfer(t) => Some(t),
            _ => None,
        }
    }

    /// The DNS result, if it is one.
    pub fn dns(&self) -> Option<&pb::DnsResult> {
        match self.observation.as_ref()? {
            Observation::Dns(d) => Some(d),
            _ => None,
        }
    }

    /// The path MTU result, if it is one.
    pub fn pmtu(&self) -> Option<&pb::PmtuResult> {
        match self.observation.as_ref()? {
            Observation::Pmtu(p) => Some(p),
            _ => None,
        }
    }

    /// The trace (path) result, if it is one.
    pub fn trace(&self) -> Option<&pb::TraceResult> {
        match self.observation.as_ref()? {
            Observation::Trace(t) => Some(t),
            _ => None,
        }
    }

    /// The listeners, if it is a listener check.
    pub fn listeners(&self) -> Option<&pb::ListenerResult> {
        match self.observation.as_ref()? {
            Observation::Listener(l) => Some(l),
            _ => None,
        }
    }

    /// The node facts, if it is a node-facts check.
    pub fn facts(&self) -> Option<&pb::NodeFacts> {
        match self.observation.as_ref()? {
            Observation::NodeFacts(f) => Some(f),
            _ => None,
        }
    }

    /// The check as the run record carries it.
    pub fn to_pb(&self) -> pb::Check {
        let rtt = self.rtt_ms.unwrap_or(Rtt {
            min: 0.0,
            avg: 0.0,
            max: 0.0,
        });
        pb::Check {
            name: pb::CheckName::from(self.name).into(),
            from: self.from.clone(),
            to: self.to.clone(),
            size: self.size,
            status: pb::CheckStatus::from(self.status).into(),
            sent: self.sent,
            received: self.received,
            rtt_min_ms: rtt.min,
            rtt_avg_ms: rtt.avg,
            rtt_max_ms: rtt.max,
            detail: self.detail.clone(),
            direction: pb::CheckDirection::from(self.direction).into(),
            result: self.result.clone(),
            ..Default::default()
        }
    }
}

/// Where a capture saw a packet: one interface of one observing probe
/// (`PROBE/IFACE` in pcapng interface names and evidence).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObserverInterface {
    /// The observing probe.
    pub probe: ProbeName,
    /// Its interface (`eth0`, `flannel.1`).
    pub interface: String,
}

impl ObserverInterface {
    /// The observer's probe, as a string.
    pub fn probe(&self) -> &str {
        self.probe.as_str()
    }

    /// Whether it is on probe `name`.
    pub fn on(&self, name: &str) -> bool {
        self.probe.as_str() == name
    }
}

impl fmt::Display for ObserverInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.probe, self.interface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(from: &str, to: &str) -> Check {
        Check {
            name: CheckName::Icmp,
            from: from.into(),
            to: to.into(),
            size: 56,
            direction: Direction::Forward,
            status: Status::Ok,
            sent: 1,
            received: 1,
            rtt_ms: None,
            detail: String::new(),
            observation: None,
            result: None,
        }
    }

    #[test]
    fn aim_and_place_read_the_check_once() {
        let c = check("node-2@pod:default/web-0", "198.18.0.12:30080");
        assert!(c.aimed_at("198.18.0.12") && !c.aimed_at("198.18.0.1"));
        assert_eq!(c.place(), "default/web-0");
        assert_eq!(check("cloudvm-1", "x").place(), "cloudvm-1");
    }

    #[test]
    fn the_wire_form_keeps_the_contract_values() {
        let pb = check("cloudvm-1", "198.18.0.12").to_pb();
        assert_eq!(
            (pb.name(), pb.status(), pb.direction()),
            (
                pb::CheckName::Icmp,
                pb::CheckStatus::Ok,
                pb::CheckDirection::Forward
            )
        );
        let at = ObserverInterface {
            probe: ProbeName::new("node-2").unwrap(),
            interface: "flannel.1".into(),
        };
        assert_eq!(at.to_string(), "node-2/flannel.1");
        assert!(at.on("node-2") && !at.on("node-20"));
    }

    #[test]
    fn results_that_observe_nothing_are_invalid() {
        let missing = pb::TaskResult::default();
        assert_eq!(Observation::try_from(&missing), Err(InvalidResult::Missing));
        let responder = pb::TaskResult {
            outcome: Some(Outcome::Responder(pb::ResponderSummary::default())),
            ..Default::default()
        };
        assert!(matches!(
            Observation::try_from(&responder),
            Err(InvalidResult::Unexpected(_))
        ));
        let ping = pb::TaskResult {
            outcome: Some(Outcome::Ping(pb::PingSummary::default())),
            ..Default::default()
        };
        assert!(matches!(
            Observation::try_from(&ping),
            Ok(Observation::Ping(_))
        ));
    }
}
