//! The MTU black hole (`mtu_blackhole`): small packets and the handshake
//! pass, large ones vanish without a frag-needed.

use probemesh_model::check::CheckName;

use probemesh_model::evidence::Claim;

use super::{Evidence, Finding, all_lost, cite, icmp_ok, seen, tcp_connected};

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
        });
    }
    None
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
}
