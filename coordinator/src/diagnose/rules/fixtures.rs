//! Test fixtures for the rules: a [`Case`] (source, target, the lab's
//! inventory) and checks built from task results like the probes send.
//! Each family's tests (in its own module) use them; nothing here decides.

pub(super) use std::net::Ipv4Addr;

use probemesh_model::inventory::Inventory;
pub(super) use probemesh_model::verdict::Cause;
pub(super) use probemesh_proto::pb;

use super::*;
pub(super) use crate::diagnose::checks::summarize;
pub(super) use crate::diagnose::model::{Check, ObserverInterface};
pub(super) use crate::diagnose::packets::{Answer, Fate, Packets, Proto, Tunnel};
pub(super) use crate::diagnose::plan::{PlannedCheck, SourceSide};
use crate::diagnose::target::{self, Resolved};
use crate::diagnose::testing::lab_inventory;
pub(super) use probemesh_model::check::Direction;
pub(super) use probemesh_model::path::{Action, Leg};
pub(super) use probemesh_proto::pb::task_result::Outcome;

pub(super) struct Case {
    pub(super) source: SourceSide,
    pub(super) target: Resolved,
    pub(super) checks: Vec<Check>,
    pub(super) packets: Option<Packets>,
    pub(super) inventory: Inventory,
}

impl Case {
    pub(super) fn new(from: &str, to: &str) -> Self {
        let reg = crate::registry::attached(&["node-1", "node-2", "node-3", "cloudvm-1"]);
        let inventory = lab_inventory();
        Self {
            source: SourceSide::resolve(from, &reg, Some(&inventory)).unwrap(),
            target: target::resolve(to, &reg, Some(&inventory)).unwrap(),
            checks: Vec::new(),
            packets: None,
            inventory,
        }
    }

    pub(super) fn with(mut self, check: Check) -> Self {
        self.checks.push(check);
        self
    }

    /// The verdict, which must state nothing its evidence does not back.
    pub(super) fn verdict(&self) -> Verdict {
        let v = diagnose(&Evidence {
            source: &self.source,
            target: &self.target,
            checks: &self.checks,
            packets: self.packets.as_ref(),
            inventory: Some(&self.inventory),
            missing: &[],
        });
        assert_eq!(v.unsupported(&self.checks), vec![], "{v:#?}");
        v
    }
}

pub(super) fn run(
    name: CheckName,
    from: &str,
    to: &str,
    direction: Direction,
    outcome: Outcome,
) -> Check {
    let planned = PlannedCheck {
        answer_is_enough: name == CheckName::Dns && from == "node-3",
        ..PlannedCheck::example(name, from, to, direction)
    };
    summarize(
        &planned,
        Some(pb::TaskResult {
            outcome: Some(outcome),
            ..Default::default()
        }),
    )
}

pub(super) fn icmp(from: &str, to: &str, sent: u32, received: u32) -> Check {
    icmp_sized(CheckName::Icmp, from, to, sent, received, 0)
}

pub(super) fn icmp_sized(
    name: CheckName,
    from: &str,
    to: &str,
    sent: u32,
    received: u32,
    errors: u32,
) -> Check {
    run(
        name,
        from,
        to,
        Direction::Forward,
        Outcome::Ping(pb::PingSummary {
            transmitted: sent,
            received,
            errors,
            size: if name == CheckName::IcmpLarge {
                1472
            } else {
                56
            },
            dont_fragment: name == CheckName::IcmpLarge,
            rtt: Some(pb::RttStats {
                min_ns: 30_000,
                avg_ns: 40_000,
                max_ns: 50_000,
                mdev_ns: 5_000,
            }),
            ..Default::default()
        }),
    )
}

pub(super) fn reverse(from: &str, to: &str, sent: u32, received: u32) -> Check {
    Check {
        direction: Direction::Reverse,
        ..icmp(from, to, sent, received)
    }
}

pub(super) fn tcp(from: &str, to: &str, connected: u32, refused: u32, timed_out: u32) -> Check {
    let (host, port) = to.split_once(':').unwrap();
    run(
        CheckName::TcpConnect,
        from,
        to,
        Direction::Forward,
        Outcome::Tcping(pb::TcpingSummary {
            host: host.into(),
            port: port.parse().unwrap(),
            attempted: connected + refused + timed_out,
            connected,
            refused,
            timed_out,
            ..Default::default()
        }),
    )
}

pub(super) fn transfer(from: &str, to: &str, connected: bool, completed: bool) -> Check {
    run(
        CheckName::TcpTransfer,
        from,
        to,
        Direction::Forward,
        Outcome::TcpTransfer(pb::TcpTransferResult {
            connected,
            completed,
            bytes_sent: 65_536,
            bytes_acked: if completed { 65_536 } else { 1 },
            mss: 1448,
            retransmits: if completed { 0 } else { 6 },
            outcome: if connected { "connected" } else { "timeout" }.into(),
            ..Default::default()
        }),
    )
}

pub(super) fn pmtu(from: &str, to: &str, path: u32, blackhole: bool) -> Check {
    run(
        CheckName::Pmtu,
        from,
        to,
        Direction::Forward,
        Outcome::Pmtu(pb::PmtuResult {
            target: to.into(),
            interface: "eth0".into(),
            interface_mtu: 1500,
            path_mtu: path,
            blackhole,
            ..Default::default()
        }),
    )
}

pub(super) fn listener(from: &str, address: &str) -> Check {
    let sockets = if address.is_empty() {
        Vec::new()
    } else {
        vec![socket(address, 8080, 0)]
    };
    listening(from, 8080, sockets)
}

/// A TCP listener on `address:port` with `recv_queue` connections waiting.
pub(super) fn socket(address: &str, port: u32, recv_queue: u32) -> pb::Listener {
    pb::Listener {
        protocol: "tcp".into(),
        address: address.into(),
        port,
        recv_queue,
        process: "server".into(),
        ..Default::default()
    }
}

/// A listener check inside `from` for `port` that found `sockets`.
pub(super) fn listening(from: &str, port: u32, sockets: Vec<pb::Listener>) -> Check {
    run(
        CheckName::Listener,
        from,
        &format!(":{port}"),
        Direction::Local,
        Outcome::Listener(pb::ListenerResult { listeners: sockets }),
    )
}

pub(super) fn facts(from: &str, f: pb::NodeFacts) -> Check {
    run(
        CheckName::NodeFacts,
        from,
        "",
        Direction::Local,
        Outcome::NodeFacts(f),
    )
}

pub(super) fn answer(server: &str, source: &str, rcode: &str, answers: &[&str]) -> pb::DnsAnswer {
    pb::DnsAnswer {
        server: server.into(),
        source: source.into(),
        rcode: rcode.into(),
        answers: answers.iter().map(|a| (*a).to_owned()).collect(),
        ..Default::default()
    }
}

/// A dig result as the probe sends it: each server asked once, tagged
/// `resolv.conf` when the namespace's resolv.conf names it.
pub(super) fn dns(from: &str, resolv_conf: &str, answers: Vec<pb::DnsAnswer>) -> Check {
    dns_named(from, "web.default.svc.cluster.local", resolv_conf, answers)
}

/// A resolution of `name` from `from`, with each server's answer.
pub(super) fn dns_named(
    from: &str,
    name: &str,
    resolv_conf: &str,
    answers: Vec<pb::DnsAnswer>,
) -> Check {
    run(
        CheckName::Dns,
        from,
        name,
        Direction::Forward,
        Outcome::Dns(pb::DnsResult {
            name: name.into(),
            answers,
            resolv_conf_servers: vec![resolv_conf.into()],
            ..Default::default()
        }),
    )
}

pub(super) const CLIENT: &str = "node-3@pod:default/client-3";
pub(super) const NAME: &str = "dns:web.default.svc.cluster.local";

pub(super) fn upstream(ok: bool) -> Check {
    dns(
        "node-3",
        "198.18.0.1",
        vec![answer(
            "198.18.0.1:53",
            "resolv.conf",
            if ok { "NXDOMAIN" } else { "TIMEOUT" },
            &[],
        )],
    )
}

pub(super) fn class(v: &Verdict) -> (&str, &str) {
    (v.class.as_str(), v.cause.map_or("", Cause::as_str))
}

/// Interface `interface` of probe `probe`, as captures name it.
pub(super) fn observer(probe: &str, interface: &str) -> ObserverInterface {
    ObserverInterface {
        probe: probemesh_proto::identity::ProbeName::new(probe).expect("probe name"),
        interface: interface.to_owned(),
    }
}

/// A test packet `src > dst:port` (an ICMP echo when `port` is 0, else a
/// TCP SYN) seen at `seen_at` in that order and never answered: lost after
/// the last. Tests change what they need with struct update.
pub(super) fn fate(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    seen_at: Vec<ObserverInterface>,
) -> Fate {
    let tcp = port != 0;
    Fate {
        proto: if tcp { Proto::Tcp } else { Proto::Icmp },
        src,
        dst,
        dst_port: port,
        syn: tcp,
        wire_bytes: if tcp { 74 } else { 98 },
        lost_after: seen_at.last().cloned(),
        seen_at,
        answer: None,
        retransmissions: 0,
        rewrites: Vec::new(),
        errors: Vec::new(),
    }
}

/// The verdict's path as (leg, where, action), to compare whole.
pub(super) fn steps(v: &Verdict) -> Vec<(Leg, &str, Action)> {
    v.path
        .iter()
        .map(|s| (s.leg, s.at.as_str(), s.action))
        .collect()
}
