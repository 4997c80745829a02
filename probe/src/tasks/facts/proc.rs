//! Parsers of the `/proc` and `/proc/sys` files node facts are read from.
//! Sans-IO: each takes the file's text; `None` means the text is not what
//! the kernel writes there.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::{DevStats, Route};

/// Most interfaces or routes taken from one file.
const MAX_LINES: usize = 10_000;

/// `/proc/net/dev`: per-interface packet, error and drop counters.
pub fn parse_net_dev(text: &str) -> Vec<DevStats> {
    text.lines()
        .skip(2)
        .take(MAX_LINES)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if n.len() < 16 {
                return None;
            }
            Some(DevStats {
                name: name.trim().to_owned(),
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
                qdisc_drops: 0,
            })
        })
        .collect()
}

/// `/proc/net/route`: the IPv4 main table (hex words in host byte order).
pub fn parse_net_route(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .take(MAX_LINES)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 11 {
                return None;
            }
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let ip = |s: &str| hex(s).map(|v| Ipv4Addr::from(v.to_ne_bytes()));
            let dst = ip(f[1])?;
            let gateway = ip(f[2])?;
            let mask = ip(f[7])?;
            let prefix = u32::from(mask).count_ones();
            let destination = if prefix == 0 && dst.is_unspecified() {
                "default".to_owned()
            } else {
                format!("{dst}/{prefix}")
            };
            let gateway = if gateway.is_unspecified() {
                String::new()
            } else {
                gateway.to_string()
            };
            Some(Route {
                raw: line.trim().to_owned(),
                destination,
                gateway,
                device: f[0].to_owned(),
                source: String::new(),
                mtu: f[8].parse().unwrap_or(0),
                table: "main".to_owned(),
            })
        })
        .collect()
}

/// `/proc/net/netstat` (or `/proc/net/snmp`): `Section: names` lines each
/// followed by `Section: values`; returns (section, name) → value.
pub fn parse_netstat(text: &str) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((section, names)), Some((section2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if section != section2 {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse() {
                out.insert((section.to_owned(), name.to_owned()), v);
            }
        }
    }
    out
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut f = text.split_whitespace().map(str::parse::<f64>);
    let (a, b, c) = (f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?);
    [a, b, c]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0)
        .then_some((a, b, c))
}

/// `/proc/sys/net/ipv4/ip_local_port_range`: low and high port.
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut f = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (f.next()?.ok()?, f.next()?.ok()?);
    (low <= high).then_some((low, high))
}

/// A file holding one unsigned number (`nf_conntrack_count`, `…_max`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `/sys/fs/selinux/enforce`: `1` enforcing, `0` permissive.
pub fn parse_selinux_enforce(text: &str) -> Option<&'static str> {
    match text.trim() {
        "1" => Some("enforcing"),
        "0" => Some("permissive"),
        _ => None,
    }
}

/// A `0`/`1` sysctl (`ip_forward`).
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn net_dev_counters() {
        let stats = parse_net_dev(include_str!("fixtures/proc_net_dev.txt"));
        let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["lo", "eth0p", "eth0", "flannel.1"]);
        assert_eq!((stats[2].rx_packets, stats[2].tx_packets), (1, 1));
        let line = "Inter-|\n face |\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";
        let s = &parse_net_dev(line)[0];
        assert_eq!(
            (s.rx_packets, s.rx_errors, s.rx_dropped),
            (2, 3, 4),
            "{s:?}"
        );
        assert_eq!((s.tx_packets, s.tx_errors, s.tx_dropped), (10, 11, 12));
    }

    #[test]
    fn ipv4_routes() {
        let routes = parse_net_route(include_str!("fixtures/proc_net_route.txt"));
        assert_eq!(routes.len(), 2);
        assert_eq!(
            (routes[0].destination.as_str(), routes[0].gateway.as_str()),
            ("198.18.0.0/24", "")
        );
        assert_eq!(
            (routes[1].destination.as_str(), routes[1].gateway.as_str()),
            ("198.19.2.0/24", "198.18.0.12")
        );
        let default = "h\neth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_net_route(default)[0].destination, "default");
    }

    #[test]
    fn netstat_listen_counters() {
        let counters = parse_netstat(include_str!("fixtures/proc_net_netstat.txt"));
        let key = |n: &str| ("TcpExt".to_owned(), n.to_owned());
        assert_eq!(counters.get(&key("ListenOverflows")), Some(&0));
        assert_eq!(counters.get(&key("ListenDrops")), Some(&0));
        let text = "TcpExt: ListenOverflows ListenDrops\nTcpExt: 12 15\n";
        assert_eq!(parse_netstat(text).get(&key("ListenDrops")), Some(&15));
    }

    #[test]
    fn small_files() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/467 12345\n"),
            Some((0.52, 0.58, 0.59))
        );
        assert_eq!(parse_loadavg("NaN 1 1"), None);
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("5 4"), None);
        assert_eq!(parse_u64("262144\n"), Some(262_144));
        assert_eq!(parse_selinux_enforce("1"), Some("enforcing"));
        assert_eq!(parse_selinux_enforce("0\n"), Some("permissive"));
        assert_eq!(parse_bool("1\n"), Some(true));
        assert_eq!(parse_bool("x"), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "(.{0,100}\n){0,5}") {
            let _ = parse_net_dev(&text);
            let _ = parse_net_route(&text);
            let _ = parse_netstat(&text);
            let _ = parse_loadavg(&text);
            let _ = parse_port_range(&text);
            let _ = parse_u64(&text);
            let _ = parse_selinux_enforce(&text);
            let _ = parse_bool(&text);
        }

        #[test]
        fn numeric_dev_lines_never_panic(words in proptest::collection::vec("[0-9A-F]{0,9}", 0..20)) {
            let text = format!("a\nb\nx: {}\n", words.join(" "));
            let _ = parse_net_dev(&text);
            let _ = parse_net_route(&format!("h\n{}", words.join("\t")));
        }
    }
}
