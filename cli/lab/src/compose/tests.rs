//! Composed faults without root: the grammar round-trips, every refusal
//! says why, every part has its verdict from the one table, every undo
//! mirrors its injection, and the random draw is a function of the seed
//! that reaches the whole space.

use std::collections::{BTreeMap, HashSet};

use probemesh_model::verdict::{Cause, Class};

use super::*;
use crate::faults::RuleOp;
use crate::rules::ProxyMode;
use crate::topology::{self, ETH_MTU};

fn part(s: &str) -> Part {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn expect(s: &str) -> (Class, Option<Cause>) {
    let row = part(s).truth().expect("a truth row");
    (row.class, row.cause)
}

#[test]
fn canonical_names_round_trip_for_the_whole_space() {
    let space = Composed::space();
    assert!(space.len() > 120, "{}", space.len());
    let mut names = HashSet::new();
    for p in &space {
        let name = p.to_string();
        assert_eq!(part(&name), *p, "{name}");
        assert!(names.insert(name.clone()), "{name} twice");
        let lab: LabFault = name.parse().expect("a lab fault");
        assert_eq!(lab.to_string(), name);
    }
    // Defaults are spelled out in the canonical name.
    assert_eq!(
        part("drop@node-2:input").to_string(),
        "drop/icmp@node-2:input"
    );
    assert_eq!(
        part("reject-tcp-reset@pod:web-0").to_string(),
        "reject-tcp-reset/tcp@pod:web-0"
    );
    let two: Composed = " drop/icmp@node-1:input , drop/icmp@node-2:input "
        .parse()
        .expect("two parts");
    assert_eq!(
        two.to_string(),
        "drop/icmp@node-1:input,drop/icmp@node-2:input"
    );
    assert_eq!(two.to_string().parse::<Composed>(), Ok(two));
}

#[test]
fn every_mechanism_and_place_is_used_and_every_family_has_a_row() {
    let space = Composed::space();
    for m in mechanisms() {
        assert!(
            space.iter().any(|p| p.mechanism() == m),
            "{} unused",
            m.name()
        );
    }
    for place in places() {
        assert!(space.iter().any(|p| p.place() == place), "{place} unused");
    }
    for p in &space {
        let row = p.truth().unwrap_or_else(|| panic!("{p}: no truth row"));
        assert_eq!(row.family, p.family(), "{p}");
        assert!(
            row.scope == p.scope() || row.scope == Scope::Anywhere,
            "{p}"
        );
        assert!(
            row.cause.is_none_or(|c| c.class() == row.class),
            "{p}: {}/{:?}",
            row.class,
            row.cause
        );
    }
    for row in TRUTH {
        assert!(
            space.iter().any(|p| p.truth() == Some(&row)),
            "row {:?}/{:?} is never used",
            row.family,
            row.scope
        );
        assert!(row.why.len() > 20, "{:?}: say why", row.family);
    }
}

#[test]
fn truth_follows_design_section_1() {
    use Cause as C;
    use Class as K;
    let cases = [
        (
            "drop/icmp@node-2:input",
            K::NetworkUnreachable,
            Some(C::Firewall),
        ),
        (
            "reject-host-unreachable/icmp@fabric:to-node-1",
            K::NetworkUnreachable,
            Some(C::Firewall),
        ),
        (
            "reject-admin-prohibited/icmp@cloudvm-1",
            K::NetworkUnreachable,
            Some(C::Firewall),
        ),
        // A RST or ICMP error made by a rule is filtered, never refused.
        (
            "reject-tcp-reset/tcp@pod:web-0",
            K::PortUnreachable,
            Some(C::Filtered),
        ),
        (
            "reject-port-unreachable/tcp@fabric:to-node-2",
            K::PortUnreachable,
            Some(C::Filtered),
        ),
        (
            "drop/tcp@node-3:forward",
            K::PortUnreachable,
            Some(C::Filtered),
        ),
        (
            "route-blackhole@node-3",
            K::NetworkUnreachable,
            Some(C::Routing),
        ),
        (
            "route-removed@node-2",
            K::NetworkUnreachable,
            Some(C::Routing),
        ),
        (
            "route-prohibit@cloudvm-1",
            K::NetworkUnreachable,
            Some(C::Routing),
        ),
        ("mtu-shrink-frag-filtered@node-2", K::MtuBlackhole, None),
        ("mtu-shrink-frag-allowed@node-2", K::Ok, None),
        ("loss@fabric:from-node-2", K::Degraded, Some(C::Loss)),
        (
            "listener-stopped@pod:web-0",
            K::PortUnreachable,
            Some(C::Refused),
        ),
        (
            "listener-stopped@pod:dns-0",
            K::DnsFailure,
            Some(C::DnsServiceDown),
        ),
        (
            "listener-loopback@pod:web-0",
            K::PortUnreachable,
            Some(C::LoopbackOnly),
        ),
        (
            "dns-drop@node-3:forward",
            K::DnsFailure,
            Some(C::DnsUnreachable),
        ),
        (
            "dns-drop@pod:client-3",
            K::DnsFailure,
            Some(C::DnsUnreachable),
        ),
        (
            "nat-missing@node-1",
            K::CniFailure,
            Some(C::KubeProxyRulesMissing),
        ),
        (
            "dnat-wrong-port@node-3",
            K::CniFailure,
            Some(C::KubeProxyRulesMissing),
        ),
        (
            "dnat-missing-pod@node-1",
            K::CniFailure,
            Some(C::KubeProxyRulesMissing),
        ),
        (
            "conntrack-full@node-1",
            K::NetworkUnreachable,
            Some(C::Overload),
        ),
        (
            "second-address@node-1",
            K::CniFailure,
            Some(C::OverlaySourceMismatch),
        ),
        ("link-down@pod:web-0", K::NetworkUnreachable, Some(C::Link)),
    ];
    for (spec, class, cause) in cases {
        assert_eq!(expect(spec), (class, cause), "{spec}");
    }
}

#[test]
fn every_refusal_names_its_reason() {
    let mut refused = 0;
    for m in mechanisms() {
        for proto in [None, Some(Protocol::Icmp), Some(Protocol::Tcp)] {
            for place in places() {
                if let Err(e) = Part::new(m, proto, place) {
                    refused += 1;
                    let InvalidSpec::Refused { part, reason } = &e else {
                        panic!("{}@{place}: {e:?}", m.name());
                    };
                    assert!(part.contains('@') && reason.len() > 20, "{e}");
                    assert!(e.to_string().contains(reason), "{e}");
                }
            }
        }
    }
    assert!(refused > 100, "{refused}");
    for (spec, needle) in [
        ("drop@node-2", "one hook"),
        ("drop/tcp@node-2:input", "node-N:forward"),
        ("reject-tcp-reset/icmp@node-2:forward", "TCP only"),
        ("route-removed@cloudvm-1", "control link"),
        ("route-blackhole@fabric:to-node-2", "control links"),
        ("loss@node-2", "fabric"),
        ("listener-loopback@pod:dns-0", "pod:web-0"),
        ("link-down@node-2", "control link"),
        ("dns-drop@node-2:forward", "upstream"),
        ("nat-missing/tcp@node-2", "PROTOCOL"),
    ] {
        let err = spec.parse::<Part>().expect_err(spec).to_string();
        assert!(err.contains(needle), "{spec}: {err}");
    }
}

#[test]
fn bad_specs_say_what_exists() {
    for (spec, needle) in [
        ("", "empty"),
        ("drop", "no @PLACE"),
        ("shake@node-2", "dnat-wrong-port"),
        ("drop/udp@node-2:input", "icmp, tcp"),
        ("drop@node-9", "fabric:to-node-1"),
    ] {
        let err = spec.parse::<Composed>().expect_err(spec).to_string();
        assert!(err.contains(needle), "{spec}: {err}");
    }
    let clash = "drop/icmp@node-2:input,drop/icmp@node-2:output"
        .parse::<Composed>()
        .expect_err("one namespace")
        .to_string();
    assert!(clash.contains("both change mesh-node-2"), "{clash}");
    let disagree = "drop/icmp@node-1:input,drop/tcp@fabric:to-node-2"
        .parse::<Composed>()
        .expect_err("two verdicts")
        .to_string();
    assert!(
        disagree.contains("network_unreachable/firewall"),
        "{disagree}"
    );
    assert!(matches!(
        "x".parse::<LabFault>(),
        Err(UnknownLabFault::Catalogue(_))
    ));
}

/// What a list of actions leaves changed, keyed by what it touches: the
/// value is the last state written (rules count +1/-1).
#[derive(Debug, Default, PartialEq)]
struct Net {
    rules: BTreeMap<(String, String, Vec<String>), i32>,
    links: BTreeMap<(String, String), String>,
    routes: BTreeMap<(String, String), Option<String>>,
    addrs: BTreeMap<(String, String), i32>,
    other: BTreeMap<String, String>,
}

fn replay(net: &mut Net, actions: &[Action]) {
    for a in actions {
        match a {
            Action::Rule {
                netns,
                op,
                chain,
                args,
            } => {
                *net.rules
                    .entry(((*netns).to_owned(), (*chain).to_owned(), args.clone()))
                    .or_default() += if *op == RuleOp::Insert { 1 } else { -1 };
            }
            Action::Ip { netns, commands } => {
                for c in commands {
                    let w: Vec<&str> = c.split_whitespace().collect();
                    let ns = (*netns).to_owned();
                    match w.as_slice() {
                        ["link", "set", dev, rest @ ..] => {
                            let dev = (*dev).to_owned();
                            net.links.insert((ns, dev), rest.join(" "));
                        }
                        ["addr", op, addr, ..] => {
                            *net.addrs.entry((ns, (*addr).to_owned())).or_default() +=
                                if *op == "add" { 1 } else { -1 };
                        }
                        ["route", "flush", "cache"] => {}
                        ["route", op, rest @ ..] => {
                            let prefix = rest
                                .iter()
                                .find(|x| x.contains('/'))
                                .map(|x| (*x).to_owned())
                                .unwrap_or_default();
                            let state = match *op {
                                "del" => None,
                                _ => Some(format!("{op} {}", rest.join(" "))),
                            };
                            net.routes.insert((ns, prefix), state);
                        }
                        other => panic!("unknown ip command {other:?}"),
                    }
                }
            }
            Action::Iptables { netns, ruleset } => {
                net.other
                    .insert(format!("iptables {netns}"), ruleset.clone());
            }
            Action::Nft { netns, script } => {
                net.other.insert(format!("nft {netns}"), script.clone());
            }
            Action::Sysctl { netns, key, value } => {
                net.other
                    .insert(format!("sysctl {netns} {key}"), (*value).to_owned());
            }
            Action::Stop(d) => {
                net.other.insert(format!("{d:?}"), "stopped".to_owned());
            }
            Action::Start(d) => {
                net.other.insert(format!("{d:?}"), "running".to_owned());
            }
            Action::ConntrackFill { netns } => {
                net.other
                    .insert(format!("conntrack {netns}"), "full".to_owned());
            }
            Action::ConntrackFlush { netns } => {
                net.other
                    .insert(format!("conntrack {netns}"), "empty".to_owned());
            }
            // Waits for what an earlier action changed; changes nothing.
            Action::Settle { .. } => {}
            other => panic!("a composed part should not {other:?}"),
        }
    }
}

/// A route the baseline holds: a node's flannel route to a peer's pod
/// CIDR (as `replace ...`); nothing else that parts touch.
fn baseline_route(netns: &str, prefix: &str) -> Option<String> {
    topology::NODES
        .iter()
        .find(|n| n.netns() == netns)
        .and_then(|n| n.peers().find(|p| p.pod_cidr() == prefix))
        .map(|p| {
            topology::peer_route(p)
                .trim_start_matches("route ")
                .to_owned()
        })
}

/// The baseline values a clear must write back in a lab whose kube-proxy
/// runs in `mode`.
fn baseline(net: &Net, mode: ProxyMode) -> bool {
    let inv = topology::inventory(false).expect("inventory");
    net.rules.values().all(|n| *n == 0)
        && net.addrs.values().all(|n| *n == 0)
        && net.links.iter().all(|((_, dev), state)| {
            state == &format!("mtu {ETH_MTU}")
                || state == "up"
                || (dev == "flannel.1"
                    && topology::NODES
                        .iter()
                        .any(|n| state == &format!("type vxlan local {}", n.ip())))
        })
        && net
            .routes
            .iter()
            .all(|((ns, prefix), state)| *state == baseline_route(ns, prefix))
        && net
            .other
            .iter()
            .all(|(k, v)| match k.split_whitespace().next() {
                Some("iptables") => topology::NODES.iter().any(|n| {
                    v == &crate::rules::node_ruleset(
                        *n,
                        &inv,
                        crate::rules::NodeRules::BASELINE,
                        mode,
                    )
                }),
                Some("nft") => topology::NODES
                    .iter()
                    .any(|n| v == &crate::rules::nftables::kube_proxy_script(*n, &inv, true)),
                Some("sysctl") => v == "120",
                Some("conntrack") => v == "empty",
                // The loopback-only web app and a broken cluster DNS are no
                // baseline processes.
                _ if k.contains("loopback: true") || k.starts_with("BrokenClusterDns") => {
                    v == "stopped"
                }
                _ => v == "running",
            })
}

#[test]
fn clear_undoes_apply_for_every_part() {
    for (p, mode) in Composed::space()
        .into_iter()
        .flat_map(|p| [ProxyMode::Iptables, ProxyMode::Nftables].map(|m| (p, m)))
    {
        let apply = p.apply(mode).expect("apply");
        let clear = p.clear(mode).expect("clear");
        assert!(!apply.is_empty() && !clear.is_empty(), "{p}");
        let mut after_apply = Net::default();
        replay(&mut after_apply, &apply);
        assert!(
            !baseline(&after_apply, mode),
            "{p} ({mode}): apply changes nothing"
        );
        let mut net = Net::default();
        replay(&mut net, &apply);
        replay(&mut net, &clear);
        assert!(baseline(&net, mode), "{p} ({mode}): clear leaves {net:#?}");
        // Every rule inserted is deleted with the same text.
        let inserted: Vec<_> = apply
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Rule {
                        op: RuleOp::Insert,
                        ..
                    }
                )
            })
            .collect();
        for a in inserted {
            let Action::Rule {
                netns, chain, args, ..
            } = a
            else {
                continue;
            };
            assert!(
                clear.contains(&Action::Rule {
                    netns,
                    op: RuleOp::Delete,
                    chain,
                    args: args.clone()
                }),
                "{p}: {a:?} is never deleted"
            );
        }
        for a in apply.iter().chain(&clear) {
            assert!(!a.commands().is_empty(), "{p}: {a:?} renders nothing");
        }
    }
}

#[test]
fn parts_are_made_the_real_way() {
    let rule = |spec: &str| match part(spec)
        .apply(ProxyMode::Iptables)
        .expect("apply")
        .as_slice()
    {
        [
            Action::Rule {
                netns, chain, args, ..
            },
        ] => format!("{netns} {chain} {}", args.join(" ")),
        other => panic!("{spec}: {other:?}"),
    };
    assert_eq!(
        rule("reject-admin-prohibited/icmp@node-2:input"),
        "mesh-node-2 INPUT -d 198.18.0.12/32 -p icmp -m icmp --icmp-type 8 -m comment --comment probemesh composed fault reject-admin-prohibited/icmp@node-2:input -j REJECT --reject-with icmp-admin-prohibited"
    );
    assert!(
        rule("drop/tcp@fabric:from-node-1")
            .starts_with("mesh-fabric FORWARD -s 198.18.0.11/32 -p tcp -m tcp --sport 30080")
    );
    assert!(
        rule("loss@fabric:to-node-3")
            .contains("! -s 198.18.255.1/32 -m statistic --mode random --probability 0.20000")
    );
    let route = part("route-unreachable@node-2")
        .apply(ProxyMode::Iptables)
        .expect("apply");
    assert_eq!(
        route,
        [Action::Ip {
            netns: "mesh-node-2",
            commands: vec!["route replace unreachable 198.19.1.0/24".to_owned()]
        }]
    );
    let dnat = part("dnat-wrong-port@node-3")
        .apply(ProxyMode::Iptables)
        .expect("apply");
    assert!(dnat.iter().any(|a| matches!(a, Action::Iptables { netns: "mesh-node-3", ruleset }
        if ruleset.contains("--to-destination 198.19.2.10:8081") && !ruleset.contains("198.19.2.10:8080"))));
    let nft = part("dnat-wrong-port@node-3")
        .apply(ProxyMode::Nftables)
        .expect("apply");
    assert!(
        nft.iter()
            .any(|a| matches!(a, Action::Nft { netns: "mesh-node-3", script }
        if script.contains("dnat to 198.19.2.10:8081") && !script.contains("198.19.2.10:8080")))
    );
    assert!(!nft.iter().any(|a| matches!(a, Action::Iptables { .. })));
    let gone = part("dnat-missing-pod@node-1")
        .apply(ProxyMode::Iptables)
        .expect("apply");
    assert!(
        gone.iter()
            .any(|a| matches!(a, Action::Iptables { ruleset, .. }
        if ruleset.contains("--to-destination 198.19.2.99:8080")))
    );
    let silent = part("mtu-shrink-frag-filtered@node-1")
        .apply(ProxyMode::Iptables)
        .expect("apply");
    let announced = part("mtu-shrink-frag-allowed@node-1")
        .apply(ProxyMode::Iptables)
        .expect("apply");
    assert_eq!(silent.len(), announced.len() + 1);
    assert!(
        silent
            .iter()
            .any(|a| a.commands().iter().any(|c| c.contains("--icmp-type 3/4")))
    );
    assert!(
        !announced
            .iter()
            .any(|a| a.commands().iter().any(|c| c.contains("3/4")))
    );
    assert_eq!(
        part("second-address@node-1")
            .apply(ProxyMode::Iptables)
            .expect("apply")[0]
            .commands(),
        [
            "ip -n mesh-node-1 addr add 198.18.0.21/24 dev eth0",
            "ip -n mesh-node-1 link set flannel.1 type vxlan local 198.18.0.21"
        ]
    );
}

#[test]
fn no_part_touches_a_probe_control_link() {
    let host = topology::HOST_IP.to_string();
    for p in Composed::space() {
        for a in p.apply(ProxyMode::Iptables).expect("apply") {
            for c in a.commands() {
                let lower = c.to_lowercase();
                assert!(
                    !lower.contains("eth0 down") && !lower.contains("default"),
                    "{p}: {c}"
                );
                assert!(
                    !c.contains(&host)
                        || c.contains(&format!("! -s {host}"))
                        || c.contains(&format!("! -d {host}")),
                    "{p}: {c}"
                );
                if let Action::Rule { args, .. } = &a {
                    assert!(
                        args.iter().any(|x| x == "icmp"
                            || x == "--dport"
                            || x == "--sport"
                            || x == "statistic"),
                        "{p}: a rule must match less than all traffic: {c}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_part_has_a_probe_run_and_a_plain_tool_check() {
    for p in Composed::space() {
        let c = Composed::new(vec![p]).expect("accepted");
        let i = c.info();
        assert_eq!(i.name, p.to_string());
        assert!(
            i.observe.starts_with("ip netns exec mesh-"),
            "{p}: {}",
            i.observe
        );
        assert!(!i.probe.from.is_empty() && !i.probe.to.is_empty(), "{p}");
        assert!(!i.symptom.is_empty() && !i.mechanism.is_empty(), "{p}");
        let json = serde_json::to_value(&i).expect("json");
        let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["expect", "mechanism", "name", "observe", "probe", "symptom"],
            "{p}: the catalogue's entry shape"
        );
    }
    let mtu = Composed::new(vec![part("mtu-shrink-frag-filtered@node-2")])
        .expect("accepted")
        .info();
    assert_eq!(
        mtu.probe_command(),
        "meshctl probe --from cloudvm-1 --to nodeport:node-2:30080 --size 1472"
    );
    let back = part("route-removed@node-2").exercise();
    assert_eq!(
        (back.from.as_str(), back.to.as_str()),
        ("node-1", "pod:default/web-0:8080")
    );
}

#[test]
fn random_is_a_function_of_the_seed_and_covers_the_space() {
    assert_eq!(Composed::random(42), Composed::random(42));
    assert_ne!(Composed::random(1), Composed::random(2));
    let space = Composed::space();
    let mut drawn = HashSet::new();
    let mut families: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..30_000 {
        let c = Composed::random_in(&space, seed);
        if seed < 1300 {
            *families
                .entry(format!("{:?}", c.parts()[0].family()))
                .or_default() += 1;
        }
        drawn.insert(c.to_string());
    }
    assert_eq!(drawn.len(), space.len(), "seeds 0..30000 reach every part");
    // Families are drawn evenly (14 families: about 93 each in 1300).
    assert_eq!(families.len(), 14, "{families:?}");
    assert!(
        families.values().all(|n| (60..=140).contains(n)),
        "{families:?}"
    );
    assert_eq!(Composed::random(0).parts().len(), 1);
    assert_eq!(Composed::random(99), Composed::random_in(&space, 99));
}

#[test]
fn the_doc_names_every_mechanism_place_and_row() {
    let doc = include_str!("../../../../docs/lab-faults.md");
    for m in mechanisms() {
        assert!(
            doc.contains(&format!("`{}`", m.name())),
            "docs/lab-faults.md lacks {}",
            m.name()
        );
    }
    for p in [
        "fabric:to-node-N",
        "fabric:from-node-N",
        "node-N:input",
        "pod:web-0",
        "pod:dns-0",
        "pod:client-3",
        "cloudvm-1",
    ] {
        assert!(doc.contains(p), "docs/lab-faults.md lacks {p}");
    }
    let table: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("## The ground truth"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| ") && l.contains(" | `"))
        .collect();
    assert_eq!(
        table.len(),
        TRUTH.len(),
        "one doc row per TRUTH row: {table:#?}"
    );
    for (row, line) in TRUTH.iter().zip(&table) {
        let expect = match row.cause {
            Some(c) => format!("`{}/{c}`", row.class),
            None => format!("`{}`", row.class),
        };
        assert!(
            line.contains(&expect),
            "{:?}: the doc says {line}",
            row.family
        );
    }
}
