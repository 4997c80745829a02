//! The verdict's path, step by step: what the synchronized captures saw of
//! one test packet (sent, forwarded, NATed, encapsulated, delivered) and
//! what came back (an answer, a reset, an ICMP error), or, without
//! captures, what the source's check saw. The failing step carries the
//! blocker the deciding rule names ([`Blocking`]); where no observer sat
//! at the failing point, the step says between which observers it lies.
//!
//! Built after the rules, from the same evidence, and never from which rule
//! decided: a rule only lends the resource it cites.

use std::net::{IpAddr, Ipv4Addr};

use probemesh_model::check::{CheckName, Direction};
use probemesh_model::evidence::Source;
use probemesh_model::inventory::Inventory;
use probemesh_model::path::{Action, Leg, Resource, Step};

use super::model::{Check, ObserverInterface};
use super::packets::{Change, Fate, Packets, Proto};
use super::plan::SourceSide;
use super::target::{Holder, Resolved};

/// What the path is built from: the run's source, checks and captures.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// Where the run started.
    pub source: &'a SourceSide,
    /// Every check.
    pub checks: &'a [Check],
    /// The captures' packet fates, when captures were read.
    pub packets: Option<&'a Packets>,
    /// The target, expanded.
    pub target: &'a Resolved,
    /// The cluster inventory.
    pub inventory: Option<&'a Inventory>,
}

/// Most unseen observers named in a "between" step.
const MAX_UNSEEN: usize = 3;

/// What a rule says blocked the packet, with the evidence for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocking {
    /// Which way the blocked packet travelled.
    pub leg: Leg,
    /// What the blocker did.
    pub action: Action,
    /// Where it sits (`node-2`, `cloudvm-1`), for a step no capture shows.
    pub at: String,
    /// The blocker.
    pub resource: Resource,
    /// Indices into the finding's evidence that show it.
    pub evidence: Vec<usize>,
}

impl Blocking {
    /// A blocker on the forward leg.
    pub fn new(
        at: impl Into<String>,
        action: Action,
        resource: Resource,
        evidence: &[usize],
    ) -> Self {
        Self {
            leg: Leg::Forward,
            action,
            at: at.into(),
            resource,
            evidence: evidence.to_vec(),
        }
    }

    /// The same blocker, on the way back.
    pub fn on_return(self) -> Self {
        Self {
            leg: Leg::Return,
            ..self
        }
    }
}

/// The path of the run: one test packet of the run's first telling check
/// (its first failing one on a fault, else its first passing one) followed
/// through the captures when they came back, else that check as it ended.
pub fn trace(e: &Seen<'_>, fault: bool, blocking: Option<&Blocking>) -> Vec<Step> {
    let focus = focus(e, fault);
    let mut steps = match focus.and_then(|c| chosen(e, c, fault)) {
        Some(f) => from_capture(e, f),
        None => focus.map(from_check).unwrap_or_default(),
    };
    if let Some(b) = blocking {
        match steps.iter_mut().find(|s| s.action.fails()) {
            Some(failing) => {
                if b.leg == Leg::Return && failing.source.is_some() {
                    // Delivered, never answered, and the rule places the
                    // loss on the way back (a reply the far side could not
                    // send).
                    failing.leg = Leg::Return;
                }
                failing.resource = Some(b.resource.clone());
                failing.evidence.clone_from(&b.evidence);
            }
            None => steps.push(Step {
                leg: b.leg,
                at: b.at.clone(),
                action: b.action,
                detail: "where the evidence places the fault".into(),
                resource: Some(b.resource.clone()),
                source: None,
                evidence: b.evidence.clone(),
            }),
        }
    }
    steps
}

/// The source's forward check that sends test packets and failed (on a
/// fault): the simplest kind first (echoes, then connects and names, then
/// transfers, whose segments the sender's offload coalesces on its own
/// capture), in plan order within a kind; on a healthy run its first
/// passing TCP connect (the packets that cross the Service's NAT), else
/// its first passing check.
fn focus<'a>(e: &Seen<'a>, fault: bool) -> Option<&'a Check> {
    let telling = e.checks.iter().filter(|c| {
        c.from == e.source.spec
            && c.direction == Direction::Forward
            && proto_of(c.name).is_some()
            && if fault { c.failed() } else { c.ok() }
    });
    if fault {
        return telling.min_by_key(|c| match c.name {
            CheckName::Icmp => 0,
            CheckName::IcmpLarge => 1,
            CheckName::TcpConnect | CheckName::Dns => 2,
            _ => 3,
        });
    }
    let telling: Vec<&Check> = telling.collect();
    telling
        .iter()
        .find(|c| c.name == CheckName::TcpConnect)
        .or_else(|| telling.first())
        .copied()
}

/// The protocol of a check's test packets.
fn proto_of(name: CheckName) -> Option<Proto> {
    match name {
        CheckName::Icmp | CheckName::IcmpLarge => Some(Proto::Icmp),
        CheckName::TcpConnect | CheckName::TcpTransfer => Some(Proto::Tcp),
        CheckName::Dns => Some(Proto::Udp),
        _ => None,
    }
}

/// The host part of a check's `to` (`host`, `host:port`, `host (…)`).
fn aimed_ip(c: &Check) -> Option<Ipv4Addr> {
    let host = c.to.split([' ', ':']).next()?;
    host.parse().ok()
}

/// The packet of `c` that shows the run best: on a fault, the first that
/// got no answer, else one answered by an ICMP error or a reset; on a
/// healthy run, the first answered one.
fn chosen<'a>(e: &Seen<'a>, c: &Check, fault: bool) -> Option<&'a Fate> {
    let proto = proto_of(c.name)?;
    let aimed = aimed_ip(c);
    // An echo of the check is at least its payload and the IP and ICMP
    // headers: smaller echoes to the same host are another check's (the
    // path trace's).
    let least = if proto == Proto::Icmp { c.size + 28 } else { 0 };
    let of_proto: Vec<&Fate> = e
        .packets?
        .fates
        .iter()
        .filter(|f| {
            f.proto == proto
                && f.seen_at.first().is_some_and(|at| at.on(&e.source.probe))
                && (proto != Proto::Udp || f.dst_port == 53)
                && f.wire_bytes >= least
        })
        .collect();
    // Aimed at the check's address, unless the source's own stack already
    // rewrote it (a ClusterIP connected to from a node leaves DNATed).
    let aimed_at: Vec<&Fate> = of_proto
        .iter()
        .copied()
        .filter(|f| proto == Proto::Udp || aimed.is_none_or(|ip| f.dst == ip))
        .collect();
    let of_check = if aimed_at.is_empty() {
        of_proto
    } else {
        aimed_at
    };
    let first = |pred: &dyn Fn(&Fate) -> bool| of_check.iter().copied().find(|f| pred(f));
    if fault {
        first(&|f| !f.errors.is_empty())
            .or_else(|| first(&|f| !f.answered()))
            .or_else(|| first(&|f| f.answer.as_ref().is_some_and(|a| a.reset)))
            // Answered, and wrong (a DNS refusal): the way was fine.
            .or_else(|| first(&|f| f.answered()))
    } else {
        first(&|f| f.answered())
    }
}

/// Where the packet was headed last: its destination after the last DNAT.
fn final_destination(f: &Fate) -> Ipv4Addr {
    f.rewrites
        .iter()
        .rev()
        .find_map(|r| match r.change {
            Change::Dnat { to } => Some(*to.ip()),
            _ => None,
        })
        .unwrap_or(f.dst)
}

fn capture_source(at: &ObserverInterface) -> Option<Source> {
    Some(Source::Capture {
        probe: at.probe().to_owned(),
        interface: at.interface.clone(),
        packet: None,
    })
}

/// Whether an observer is where a packet for `holder` arrives: the pod's
/// own interface for a pod's address, the host for the host's.
fn reaches(holder: Option<&Holder>, at: &ObserverInterface) -> bool {
    holder.is_some_and(|h| at.on(&h.probe) && h.pod == at.interface.starts_with("pod:"))
}

fn from_capture(e: &Seen<'_>, f: &Fate) -> Vec<Step> {
    let mut steps = Vec::new();
    let holder = e
        .target
        .holder(e.inventory, IpAddr::V4(final_destination(f)));
    let last = f.seen_at.len().saturating_sub(1);
    for (i, at) in f.seen_at.iter().enumerate() {
        let changes: Vec<&Change> = f
            .rewrites
            .iter()
            .filter(|r| r.at == *at)
            .map(|r| &r.change)
            .collect();
        let nat = changes
            .iter()
            .any(|c| matches!(c, Change::Dnat { .. } | Change::Snat { .. }));
        let delivered = i > 0 && i == last && (f.answered() || reaches(holder.as_ref(), at));
        let action = if i == 0 {
            Action::Sent
        } else if nat {
            Action::Nated
        } else if !changes.is_empty() {
            Action::Encapsulated
        } else if delivered {
            Action::Delivered
        } else {
            Action::Forwarded
        };
        let mut detail = if i == 0 { f.describe() } else { String::new() };
        for c in changes {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(&describe(c));
        }
        steps.push(Step {
            leg: Leg::Forward,
            at: at.to_string(),
            action,
            detail,
            resource: None,
            source: capture_source(at),
            evidence: Vec::new(),
        });
        if delivered && action != Action::Delivered {
            steps.push(Step {
                leg: Leg::Forward,
                at: at.to_string(),
                action: Action::Delivered,
                detail: String::new(),
                resource: None,
                source: capture_source(at),
                evidence: Vec::new(),
            });
        }
    }
    for err in &f.errors {
        steps.push(Step {
            leg: Leg::Return,
            at: err.from.to_string(),
            action: Action::Rejected,
            detail: format!("{} (seen at {})", err.error.describe(), err.at),
            resource: None,
            source: capture_source(&err.at),
            evidence: Vec::new(),
        });
    }
    match (&f.answer, f.seen_at.last()) {
        (Some(a), _) => steps.push(Step {
            leg: Leg::Return,
            at: a.at.to_string(),
            action: if a.reset {
                Action::Rejected
            } else {
                Action::Answered
            },
            detail: if a.reset {
                "a TCP reset came back".into()
            } else {
                "the answer came back".into()
            },
            resource: None,
            source: capture_source(&a.at),
            evidence: Vec::new(),
        }),
        (None, Some(last_seen)) if f.errors.is_empty() && reaches(holder.as_ref(), last_seen) => {
            steps.push(Step {
                leg: Leg::Forward,
                at: last_seen.to_string(),
                action: Action::Dropped,
                detail: "delivered here; no answer and no error came back".into(),
                resource: None,
                source: capture_source(last_seen),
                evidence: Vec::new(),
            });
        }
        (None, Some(last_seen)) if f.errors.is_empty() => {
            let unseen: Vec<&ObserverInterface> = e
                .packets
                .map(|p| p.captured.as_slice())
                .unwrap_or_default()
                .iter()
                .filter(|c| !f.seen_at.contains(c) && !c.on(&e.source.probe))
                .collect();
            // The destination's own observers, when it has any unseen (a
            // host's are not its pods').
            let at_destination: Vec<&ObserverInterface> = unseen
                .iter()
                .copied()
                .filter(|c| {
                    holder.as_ref().is_some_and(|h| {
                        c.on(&h.probe) && (h.pod || !c.interface.starts_with("pod:"))
                    })
                })
                .collect();
            let unseen: Vec<String> = if at_destination.is_empty() {
                unseen
            } else {
                at_destination
            }
            .into_iter()
            .take(MAX_UNSEEN)
            .map(ToString::to_string)
            .collect();
            let at = if unseen.is_empty() {
                format!("after {last_seen}")
            } else {
                format!("between {last_seen} and {}", unseen.join(" / "))
            };
            steps.push(Step {
                leg: Leg::Forward,
                at,
                action: Action::Dropped,
                detail: format!("last seen at {last_seen}; no answer and no error came back"),
                resource: None,
                source: None,
                evidence: Vec::new(),
            });
        }
        (None, _) => {}
    }
    steps
}

fn describe(c: &Change) -> String {
    match c {
        Change::Dnat { to } => format!("destination rewritten to {to}"),
        Change::Snat { to } => format!("source rewritten to {to}"),
        Change::Encapsulated {
            kind,
            outer_src,
            outer_dst,
        } => format!("in {kind} {outer_src} > {outer_dst}"),
    }
}

/// Without captures: the check as sent and as it ended.
fn from_check(c: &Check) -> Vec<Step> {
    let source = Some(Source::Check {
        name: c.name,
        from: c.from.clone(),
        to: c.to.clone(),
    });
    let step = |leg, at: String, action, detail: String| Step {
        leg,
        at,
        action,
        detail,
        resource: None,
        source: source.clone(),
        evidence: Vec::new(),
    };
    let mut steps = vec![step(
        Leg::Forward,
        c.from.clone(),
        Action::Sent,
        format!("{} to {}", c.name, c.to),
    )];
    if let Some(p) = c.ping() {
        for l in &p.local_errors {
            steps.push(step(
                Leg::Forward,
                c.from.clone(),
                Action::Rejected,
                format!("{}: {} ({} times)", l.errno, l.detail, l.count),
            ));
        }
        for err in &p.icmp_errors {
            steps.push(step(
                Leg::Return,
                err.from.clone(),
                Action::Rejected,
                format!("{} ({} times)", err.detail, err.count),
            ));
        }
    }
    if let Some(d) = c.dns() {
        let refusals = ["REFUSED", "SERVFAIL", "NXDOMAIN"];
        for a in d
            .answers
            .iter()
            .filter(|a| refusals.contains(&a.rcode.as_str()))
        {
            steps.push(step(
                Leg::Return,
                a.server.clone(),
                Action::Rejected,
                format!("answered {}", a.rcode),
            ));
        }
    }
    if let Some(t) = c.tcping()
        && t.refused > 0
    {
        steps.push(step(
            Leg::Return,
            c.to.clone(),
            Action::Rejected,
            format!(
                "{} of {} connects refused (a reset came back)",
                t.refused, t.attempted
            ),
        ));
    }
    if steps.len() == 1 {
        let (at, action) = if c.ok() {
            (c.to.clone(), Action::Answered)
        } else {
            (format!("between {} and {}", c.from, c.to), Action::Dropped)
        };
        steps.push(step(
            if c.ok() { Leg::Return } else { Leg::Forward },
            at,
            action,
            c.detail.clone(),
        ));
    }
    steps
}
