//! Parsers of iproute2's JSON output: `ip -j route show table all`,
//! `ip -j route get ADDR` (the kernel's decision, policy rules included),
//! `ip -j -d link show` (tunnel devices) and `tc -s -j qdisc` (drops).
//! Sans-IO: text in, facts out; malformed JSON gives nothing.
//!
//! Why iproute2 rather than netlink by hand: routes with their tables and
//! metrics, and tunnel parameters (`IFLA_INFO_DATA` nested per link kind),
//! are a few hundred lines of rtnetlink attribute decoding per kind, for
//! output `ip -j` already gives in a stable, documented JSON form.

use std::collections::HashMap;

use serde_json::Value;

use super::{Route, RouteDecision, Tunnel};

/// Most entries taken from one document.
const MAX_ENTRIES: usize = 10_000;

fn entries(text: &str) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items.into_iter().take(MAX_ENTRIES).collect(),
        _ => Vec::new(),
    }
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn number(v: &Value, key: &str) -> u32 {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// `ip -j route show table all`, without the kernel's `local` table
/// (local and broadcast addresses: noise for diagnosis).
pub fn parse_routes(json: &str) -> Vec<Route> {
    entries(json)
        .iter()
        .filter_map(|r| {
            let table = match text(r, "table") {
                t if t.is_empty() => "main".to_owned(),
                t => t,
            };
            if table == "local" {
                return None;
            }
            let mtu = r
                .get("metrics")
                .and_then(Value::as_array)
                .and_then(|m| m.iter().find_map(|m| m.get("mtu")?.as_u64()))
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(0);
            let route = Route {
                destination: text(r, "dst"),
                gateway: text(r, "gateway"),
                device: text(r, "dev"),
                source: text(r, "prefsrc"),
                mtu,
                table,
                raw: String::new(),
            };
            let kind = text(r, "type");
            let mut raw = render_route(&route, &kind, &text(r, "protocol"), &text(r, "scope"));
            // `linkdown`, `dead`, `onlink`: a route whose device has no
            // carrier still matches, and only its flags say it leads nowhere.
            for flag in r
                .get("flags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(flag) = flag.as_str() {
                    raw.push(' ');
                    raw.push_str(flag);
                }
            }
            Some(Route { raw, ..route })
        })
        .collect()
}

/// The kernel's answer to `ip -j route get DESTINATION`.
pub fn parse_route_get(destination: &str, json: &str) -> Option<RouteDecision> {
    let r = entries(json).into_iter().next()?;
    let kind = match text(&r, "type") {
        t if t.is_empty() => "unicast".to_owned(),
        t => t,
    };
    let (device, gateway) = (text(&r, "dev"), text(&r, "gateway"));
    let mut decision = vec![destination.to_owned()];
    for (key, value) in [
        ("via", gateway.as_str()),
        ("dev", device.as_str()),
        ("table", text(&r, "table").as_str()),
        ("src", text(&r, "prefsrc").as_str()),
    ] {
        if !value.is_empty() {
            decision.push(format!("{key} {value}"));
        }
    }
    if kind != "unicast" {
        decision.insert(0, kind.clone());
    }
    Some(RouteDecision {
        destination: destination.to_owned(),
        kind,
        device,
        gateway,
        decision: decision.join(" "),
    })
}

/// The kernel's refusal of `ip route get DESTINATION`, read from the
/// errno `ip` prints: a blackhole route answers EINVAL, an unreachable
/// route EHOSTUNREACH, a prohibit route EACCES, no route ENETUNREACH.
/// `None` for any other failure (not a route decision).
pub fn refused_route(destination: &str, reason: &str) -> Option<RouteDecision> {
    const ERRNOS: [(&str, &str); 4] = [
        ("Invalid argument", "blackhole"),
        ("No route to host", "unreachable"),
        ("Permission denied", "prohibit"),
        ("Network is unreachable", "no_route"),
    ];
    let (said, kind) = ERRNOS.iter().find(|(said, _)| reason.contains(said))?;
    Some(RouteDecision {
        destination: destination.to_owned(),
        kind: (*kind).to_owned(),
        device: String::new(),
        gateway: String::new(),
        decision: format!("{kind}: RTNETLINK answers: {said}"),
    })
}

/// The route as `ip route show` prints it.
fn render_route(r: &Route, kind: &str, protocol: &str, scope: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !kind.is_empty() {
        parts.push(kind.to_owned());
    }
    parts.push(r.destination.clone());
    let pairs = [
        ("via", r.gateway.as_str()),
        ("dev", r.device.as_str()),
        ("table", if r.table == "main" { "" } else { &r.table }),
        ("proto", protocol),
        ("scope", scope),
        ("src", r.source.as_str()),
    ];
    for (key, value) in pairs {
        if !value.is_empty() {
            parts.push(format!("{key} {value}"));
        }
    }
    if r.mtu > 0 {
        parts.push(format!("mtu {}", r.mtu));
    }
    parts.join(" ")
}

/// Tunnel devices (VXLAN, IPIP, GRE, Geneve, …) of `ip -j -d link show`.
pub fn parse_tunnels(json: &str) -> Vec<Tunnel> {
    const KINDS: [&str; 6] = ["vxlan", "ipip", "gre", "geneve", "sit", "ip6tnl"];
    entries(json)
        .iter()
        .filter_map(|link| {
            let info = link.get("linkinfo")?;
            let kind = text(info, "info_kind");
            if !KINDS.contains(&kind.as_str()) {
                return None;
            }
            let data = info.get("info_data").cloned().unwrap_or(Value::Null);
            let first = |keys: &[&str]| {
                keys.iter()
                    .map(|k| text(&data, k))
                    .find(|v| !v.is_empty())
                    .unwrap_or_default()
            };
            Some(Tunnel {
                device: text(link, "ifname"),
                vni: number(&data, "id"),
                local: first(&["local", "local6"]),
                remote: first(&["remote", "remote6", "group", "group6"]),
                dst_port: number(&data, "port"),
                underlay_device: text(&data, "link"),
                mtu: number(link, "mtu"),
                kind,
            })
        })
        .collect()
}

/// MTU of every link of `ip -j link show`, by name.
pub fn parse_link_mtus(json: &str) -> HashMap<String, u32> {
    entries(json)
        .iter()
        .filter_map(|link| {
            let name = text(link, "ifname");
            let mtu = number(link, "mtu");
            (!name.is_empty() && mtu > 0).then_some((name, mtu))
        })
        .collect()
}

/// `tc -s -j qdisc`: drops per device, summed over its qdiscs.
pub fn parse_qdisc_drops(json: &str) -> HashMap<String, u64> {
    let mut drops: HashMap<String, u64> = HashMap::new();
    for q in entries(json) {
        let dev = text(&q, "dev");
        let n = q.get("drops").and_then(Value::as_u64).unwrap_or(0);
        if !dev.is_empty() {
            let total = drops.entry(dev).or_default();
            *total = total.saturating_add(n);
        }
    }
    drops
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_kernels_route_decision_and_its_refusals() {
        let via = r#"[{"dst":"198.19.253.1","gateway":"198.18.250.9","dev":"v0","prefsrc":"198.18.250.1","flags":[],"uid":0,"cache":[]}]"#;
        let d = parse_route_get("198.19.253.1", via).unwrap();
        assert_eq!(
            (
                d.kind.as_str(),
                d.device.as_str(),
                d.gateway.as_str(),
                d.decision.as_str()
            ),
            (
                "unicast",
                "v0",
                "198.18.250.9",
                "198.19.253.1 via 198.18.250.9 dev v0 src 198.18.250.1"
            )
        );
        let local = r#"[{"type":"local","dst":"198.18.250.1","dev":"lo","prefsrc":"198.18.250.1","flags":[],"uid":0,"cache":["local"]}]"#;
        assert_eq!(
            parse_route_get("198.18.250.1", local).unwrap().kind,
            "local"
        );
        assert_eq!(parse_route_get("198.18.250.1", "not json"), None);
        let refused = |reason| refused_route("198.19.250.1", reason).map(|d| d.kind);
        assert_eq!(
            refused(
                "ip -j route get 198.19.250.1: exit status: 2 RTNETLINK answers: Invalid argument"
            ),
            Some("blackhole".into())
        );
        assert_eq!(
            refused("RTNETLINK answers: No route to host"),
            Some("unreachable".into())
        );
        assert_eq!(
            refused("RTNETLINK answers: Permission denied"),
            Some("prohibit".into())
        );
        assert_eq!(
            refused("RTNETLINK answers: Network is unreachable"),
            Some("no_route".into())
        );
        assert_eq!(refused("ip: not installed"), None);
    }

    #[test]
    fn routes_of_all_tables_but_local() {
        let routes = parse_routes(include_str!("fixtures/ip_route.json"));
        let raw: Vec<&str> = routes.iter().map(|r| r.raw.as_str()).collect();
        assert_eq!(
            raw[..4],
            [
                "blackhole 198.19.9.0/24 table 100",
                "default via 198.18.0.1 dev eth0",
                "198.18.0.0/24 dev eth0 proto kernel scope link src 198.18.0.11",
                "198.19.2.0/24 via 198.18.0.12 dev eth0 src 198.18.0.11 mtu 1400",
            ]
        );
        assert!(routes.iter().all(|r| r.table != "local"));
        assert_eq!(routes[3].mtu, 1400);
        assert_eq!(routes[0].table, "100");
        assert_eq!(routes[1].table, "main");
    }

    #[test]
    fn a_route_without_carrier_says_so() {
        let json = r#"[{"dst":"198.19.2.0/24","dev":"cni0","protocol":"kernel","scope":"link","prefsrc":"198.19.2.1","flags":["linkdown"]}]"#;
        assert_eq!(
            parse_routes(json)[0].raw,
            "198.19.2.0/24 dev cni0 proto kernel scope link src 198.19.2.1 linkdown"
        );
    }

    #[test]
    fn vxlan_and_ipip_tunnels() {
        let tunnels = parse_tunnels(include_str!("fixtures/ip_link.json"));
        assert_eq!(tunnels.len(), 2, "{tunnels:?}");
        let vxlan = &tunnels[0];
        assert_eq!(
            (vxlan.device.as_str(), vxlan.kind.as_str(), vxlan.vni),
            ("flannel.1", "vxlan", 1)
        );
        assert_eq!(
            (vxlan.local.as_str(), vxlan.dst_port, vxlan.mtu),
            ("198.18.0.11", 8472, 1450)
        );
        assert_eq!(vxlan.underlay_device, "eth0");
        // The ipip entry follows iproute2's print_iptun format (the
        // recording host had no ipip module).
        let ipip = &tunnels[1];
        assert_eq!(
            (ipip.kind.as_str(), ipip.remote.as_str(), ipip.mtu),
            ("ipip", "198.18.0.12", 1440)
        );
    }

    #[test]
    fn link_mtus() {
        let mtus = parse_link_mtus(include_str!("fixtures/ip_link.json"));
        assert_eq!(mtus.get("flannel.1"), Some(&1450));
        assert_eq!(mtus.get("lo"), Some(&65536));
    }

    #[test]
    fn qdisc_drops_per_device() {
        let drops = parse_qdisc_drops(include_str!("fixtures/tc_qdisc.json"));
        assert_eq!(drops.get("eth0"), Some(&7));
        assert_eq!(drops.get("lo"), Some(&0));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,300}") {
            let _ = parse_routes(&text);
            let _ = parse_tunnels(&text);
            let _ = parse_qdisc_drops(&text);
            let _ = parse_link_mtus(&text);
        }

        #[test]
        fn json_shaped_input_never_panics(ints in proptest::collection::vec(any::<i64>(), 0..4), s in "[a-z0-9.]{0,10}") {
            let doc = format!(
                r#"[{{"ifname":"{s}","mtu":{},"linkinfo":{{"info_kind":"vxlan","info_data":{{"id":{},"port":{},"local":"{s}"}}}},"dst":"{s}","metrics":[{{"mtu":{}}}],"dev":"{s}","drops":{}}}]"#,
                ints.first().unwrap_or(&0), ints.get(1).unwrap_or(&-1), ints.get(2).unwrap_or(&0), ints.get(3).unwrap_or(&0), ints.first().unwrap_or(&0),
            );
            let _ = parse_routes(&doc);
            let _ = parse_tunnels(&doc);
            let _ = parse_qdisc_drops(&doc);
        }
    }
}
