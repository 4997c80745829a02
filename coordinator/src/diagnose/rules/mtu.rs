//! The MTU black hole (`mtu_blackhole`): small packets and the handshake
//! pass, large ones vanish without a frag-needed.

use probemesh_model::check::CheckName;

use probemesh_model::evidence::Claim;
use probemesh_model::path::{Action, Resource, ResourceKind};

use super::{Evidence, Finding, all_lost, cite, icmp_ok, seen, tcp_connected};
use crate::diagnose::model::Check;
use crate::diagnose::path::Blocking;
use probemesh_packet::icmp::CODE_FRAG_NEEDED;

pub(super) fn mtu_blackhole(e: &Evidence<'_>) -> Option<Finding> {
    for ep in e.hosts() {
        let host = ep.host.as_str();
        if !icmp_ok(e, host) {
            continue;
        }
        let large = e
            .aimed(CheckName::IcmpLarge, host)
            .find(|c| all_lost(c) && c.ping().is_some_and(|p| p.errors == 0));
        let stalled = e
            .aimed(CheckName::TcpTransfer, host)
            .find(|c| c.failed() && c.transfer().is_some_and(|t| t.connected));
        if large.is_none() && stalled.is_none() {
            continue;
        }
        let search = e
            .aimed(CheckName::Pmtu, host)
            .find_map(|c| Some((c, c.pmtu()?)))
            .filter(|(_, p)| p.blackhole || (p.path_mtu > 0 && p.path_mtu < p.interface_mtu));
        let Some((pc, p)) = search else {
            continue;
        };
        let mut evidence = vec![];
        let (mut small_pass, mut silent, mut lost) = (vec![], vec![], vec![]);
        if let Some(small) = e.aimed(CheckName::Icmp, host).find(|c| c.ok()) {
            small_pass.push(evidence.len());
            evidence.push(cite(
                small,
                &format!("small packets pass: {}", small.detail),
            ));
        }
        if let Some(c) = large {
            silent.push(evidence.len());
            lost.push(evidence.len());
            evidence.push(cite(
                c,
                &format!("{}-byte echoes with DF vanish: {}", c.size, c.detail),
            ));
        }
        let handshake = tcp_connected(e, host).and_then(|_| {
            e.aimed(CheckName::TcpConnect, host)
                .find(|c| c.received > 0)
        });
        if let Some(c) = handshake {
            small_pass.push(evidence.len());
            evidence.push(cite(c, &format!("the TCP handshake works: {}", c.detail)));
        }
        if let Some(c) = stalled {
            lost.push(evidence.len());
            evidence.push(cite(c, &c.detail));
        }
        let mut mtus = vec![evidence.len()];
        silent.push(evidence.len());
        evidence.push(cite(pc, &pc.detail));
        // Where it shrinks: a node interface at the path MTU.
        let mut shrinks = String::new();
        let mut blocker = Resource::new(
            ResourceKind::Interface,
            format!(
                "{}: {} mtu {} (the path carries {})",
                e.source.spec, p.interface, p.interface_mtu, p.path_mtu
            ),
        );
        for c in e.ran(CheckName::NodeFacts) {
            if let Some(f) = c.facts()
                && let Some(i) = f
                    .interfaces
                    .iter()
                    .find(|i| i.mtu == p.path_mtu && i.name != "lo")
            {
                mtus.push(evidence.len());
                evidence.push(cite(
                    c,
                    &format!("{}'s {} has MTU {}", c.from, i.name, i.mtu),
                ));
                if shrinks.is_empty() {
                    shrinks = format!(" (at {}'s {})", c.from, i.name);
                    blocker = Resource::new(
                        ResourceKind::Interface,
                        format!("{}: {} mtu {}", c.from, i.name, i.mtu),
                    );
                }
            }
        }
        let mut confidence: f64 = 0.85;
        if let Some(pk) = e.packets {
            let big = pk.fates.iter().find(|f| {
                f.wire_bytes > p.path_mtu
                    && !f.answered()
                    && f.dst.to_string() == host
                    && f.lost_after.is_some()
            });
            if let Some((f, at)) = big.and_then(|f| Some((f, f.lost_after.as_ref()?))) {
                lost.push(evidence.len());
                evidence.push(seen(
                    at,
                    format!("{} leaves {} and is never seen further", f.describe(), at),
                ));
                confidence += 0.1;
            }
        }
        return Some(Finding {
            claims: vec![
                Claim::new(
                    format!(
                        "MTU black hole towards {host}: the path carries {} bytes{shrinks} while {} sends {}-byte packets on {}",
                        p.path_mtu, e.source.spec, p.interface_mtu, p.interface
                    ),
                    &mtus,
                ),
                Claim::new("no ICMP frag-needed comes back", &silent),
                Claim::new(
                    if handshake.is_some() {
                        "small packets and the TCP handshake pass"
                    } else {
                        "small packets pass"
                    },
                    &small_pass,
                ),
                Claim::new("full-size packets are lost", &lost),
            ],
            fix: format!(
                "make the MTUs agree: set {}'s {} MTU to {} (ip link set {} mtu {}) or clamp TCP MSS to the path (iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu); and let ICMP type 3 code 4 (frag-needed) through the firewalls so path MTU discovery works",
                e.source.spec, p.interface, p.path_mtu, p.interface, p.path_mtu
            ),
            evidence,
            confidence: confidence.min(0.95),
            blocking: Some(Blocking::new(
                &e.source.spec,
                Action::Dropped,
                blocker,
                &mtus,
            )),
        });
    }
    None
}

/// Large DF packets refused with the path's MTU while everything else
/// works is path-MTU discovery doing its job: a router's frag-needed
/// reached the sender (the pmtu check names it), the sender's stack now
/// refuses larger DF sends itself (EMSGSIZE at that MTU) or gets the
/// error, and TCP transfers complete. Nothing to fix, so `ok`: saying so
/// is the near miss of an MTU black hole.
pub(super) fn pmtud_works(e: &Evidence<'_>) -> Option<Finding> {
    let failed: Vec<&Check> = e.checks.iter().filter(|c| c.failed()).collect();
    let pc = e.ran(CheckName::Pmtu).find(|c| {
        c.pmtu()
            .is_some_and(|p| !p.blackhole && p.frag_needed_mtu > 0)
    })?;
    let p = pc.pmtu()?;
    // Every failure is a large DF echo refused with the MTU, or the pmtu
    // check itself reporting the smaller path.
    let explained = |c: &&Check| {
        c.name == CheckName::Pmtu
            || (c.name == CheckName::IcmpLarge
                && c.ping().is_some_and(|g| {
                    g.received == 0
                        && g.errors > 0
                        && g.local_errors.iter().all(|l| l.errno == "EMSGSIZE")
                        && g.icmp_errors
                            .iter()
                            .all(|i| i.code == u32::from(CODE_FRAG_NEEDED))
                }))
    };
    if failed.is_empty() || !failed.iter().all(explained) {
        return None;
    }
    let transfer = e.ran(CheckName::TcpTransfer).find(|c| c.ok())?;
    let small = e.ran(CheckName::Icmp).find(|c| c.ok())?;
    let mut evidence = vec![
        cite(pc, &pc.detail),
        cite(transfer, &transfer.detail),
        cite(small, &small.detail),
    ];
    let mut large = vec![0];
    for c in failed.iter().filter(|c| c.name == CheckName::IcmpLarge) {
        large.push(evidence.len());
        evidence.push(cite(c, &c.detail));
    }
    Some(Finding {
        claims: vec![
            Claim::new(
                format!(
                    "the path to {} carries {} bytes, less than {}'s {} MTU {}",
                    p.address, p.path_mtu, pc.from, p.interface, p.interface_mtu
                ),
                &[0],
            ),
            Claim::new(
                format!(
                    "{} says so with frag-needed (mtu {}), so path MTU discovery works: larger DF packets are refused with the right MTU",
                    p.frag_needed_from, p.frag_needed_mtu
                ),
                &large,
            ),
            Claim::new("small packets and TCP transfers go through", &[1, 2]),
        ],
        fix: String::new(),
        evidence,
        confidence: 0.8,
        blocking: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::fixtures::pmtu;
    use crate::diagnose::rules::fixtures::*;

    #[tokio::test]
    async fn large_packets_lost_silently_with_a_small_path_mtu_are_a_black_hole() {
        let case = || {
            Case::new("cloudvm-1", "nodeport:30080")
                .with(icmp("cloudvm-1", "198.18.0.11", 20, 20))
                .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
                .with(icmp_sized(
                    CheckName::IcmpLarge,
                    "cloudvm-1",
                    "198.18.0.11",
                    5,
                    5,
                    0,
                ))
                .with(icmp_sized(
                    CheckName::IcmpLarge,
                    "cloudvm-1",
                    "198.18.0.12",
                    5,
                    0,
                    0,
                ))
                .with(tcp("cloudvm-1", "198.18.0.12:30080", 3, 0, 0))
                .with(transfer("cloudvm-1", "198.18.0.12:30080", true, false))
                .with(facts(
                    "node-2",
                    pb::NodeFacts {
                        interfaces: vec![pb::Interface {
                            name: "eth0".into(),
                            mtu: 1440,
                            addresses: vec!["198.18.0.12/24".into()],
                            up: true,
                        }],
                        ..Default::default()
                    },
                ))
        };
        let v = case()
            .with(pmtu("cloudvm-1", "198.18.0.12", 1440, true))
            .verdict();
        assert_eq!(class(&v), ("mtu_blackhole", ""), "{v:?}");
        assert!(
            v.summary.contains("1440") && v.summary.contains("1500"),
            "{}",
            v.summary
        );
        assert!(v.summary.contains("node-2's eth0"), "{}", v.summary);
        // Path MTU discovery that works is no black hole.
        let v = case()
            .with(pmtu("cloudvm-1", "198.18.0.12", 1500, false))
            .verdict();
        assert_ne!(v.class.as_str(), "mtu_blackhole", "{v:?}");
    }

    #[tokio::test]
    async fn frag_needed_that_reaches_the_sender_is_path_mtu_discovery_working() {
        let refused = run(
            CheckName::IcmpLarge,
            "cloudvm-1",
            "198.18.0.12",
            Direction::Forward,
            Outcome::Ping(pb::PingSummary {
                transmitted: 5,
                errors: 5,
                size: 1472,
                dont_fragment: true,
                local_errors: vec![pb::LocalErrorCount {
                    errno: "EMSGSIZE".into(),
                    detail: "local error: message too long, mtu=1440".into(),
                    count: 5,
                }],
                ..Default::default()
            }),
        );
        let discovered = run(
            CheckName::Pmtu,
            "cloudvm-1",
            "198.18.0.12",
            Direction::Forward,
            Outcome::Pmtu(pb::PmtuResult {
                address: "198.18.0.12".into(),
                interface: "eth0".into(),
                interface_mtu: 1500,
                path_mtu: 1440,
                frag_needed_from: "198.18.100.1".into(),
                frag_needed_mtu: 1440,
                ..Default::default()
            }),
        );
        let v = Case::new("cloudvm-1", "nodeport:node-2:30080")
            .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
            .with(tcp("cloudvm-1", "198.18.0.12:30080", 3, 0, 0))
            .with(transfer("cloudvm-1", "198.18.0.12:30080", true, true))
            .with(refused)
            .with(discovered)
            .verdict();
        assert_eq!(class(&v), ("ok", ""), "{v:#?}");
        assert_eq!(v.rule, "path-mtu-discovery-works");
        assert!(
            v.summary.contains("path MTU discovery works"),
            "{}",
            v.summary
        );
        // Silence instead of frag-needed stays a black hole.
        let v = Case::new("cloudvm-1", "nodeport:node-2:30080")
            .with(icmp("cloudvm-1", "198.18.0.12", 20, 20))
            .with(tcp("cloudvm-1", "198.18.0.12:30080", 3, 0, 0))
            .with(transfer("cloudvm-1", "198.18.0.12:30080", true, false))
            .with(icmp_sized(
                CheckName::IcmpLarge,
                "cloudvm-1",
                "198.18.0.12",
                5,
                0,
                0,
            ))
            .with(pmtu("cloudvm-1", "198.18.0.12", 1440, true))
            .verdict();
        assert_eq!(class(&v).0, "mtu_blackhole", "{v:#?}");
    }
}
