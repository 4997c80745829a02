//! Which interface a packet to a given IPv4 address leaves by, read from the
//! kernel's routing table as `/proc/net/route` prints it. Sans-IO: the text
//! comes from [`crate::platform::linux::read_route_table`]. Only the main
//! table is printed there; a target reached through policy routing or the
//! local table gets no answer (the caller falls back to the route MTU).

use std::net::Ipv4Addr;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x1;

/// One usable route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// Destination network.
    pub destination: Ipv4Addr,
    /// Prefix length, 0..=32 bits.
    pub prefix_len: u32,
    /// Route metric; lower wins among equal prefixes.
    pub metric: u32,
}

/// The routes of a `/proc/net/route` table; lines that do not parse, and
/// routes not up, are skipped.
pub fn parse(table: &str) -> Vec<Route> {
    table.lines().skip(1).filter_map(parse_line).collect()
}

/// The interface of the longest-prefix route to `to` (lowest metric among
/// equals), if any.
pub fn egress_interface(table: &str, to: Ipv4Addr) -> Option<String> {
    let to = u32::from(to);
    parse(table)
        .into_iter()
        .filter(|r| {
            let mask = prefix_mask(r.prefix_len);
            to & mask == u32::from(r.destination) & mask
        })
        .min_by_key(|r| (std::cmp::Reverse(r.prefix_len), r.metric))
        .map(|r| r.interface)
}

fn prefix_mask(len: u32) -> u32 {
    u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0)
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT`,
/// addresses as the hex of their in-memory (network-order) bytes.
fn parse_line(line: &str) -> Option<Route> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [
        interface,
        destination,
        _gateway,
        flags,
        _refcnt,
        _use,
        metric,
        mask,
        ..,
    ] = fields.as_slice()
    else {
        return None;
    };
    let flags = u32::from_str_radix(flags, 16).ok()?;
    if flags & RTF_UP == 0 {
        return None;
    }
    let mask = u32::from(address(mask)?);
    if mask.leading_ones() + mask.trailing_zeros() != 32 {
        return None;
    }
    Some(Route {
        interface: (*interface).to_owned(),
        destination: address(destination)?,
        prefix_len: mask.leading_ones(),
        metric: metric.parse().ok()?,
    })
}

fn address(hex: &str) -> Option<Ipv4Addr> {
    let raw = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(raw.to_ne_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(a: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(a.octets()))
    }

    fn table(rows: &[(&str, Ipv4Addr, u32, u32, Ipv4Addr)]) -> String {
        let mut t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
                .to_owned();
        for (iface, dst, flags, metric, mask) in rows {
            t.push_str(&format!(
                "{iface}\t{}\t00000000\t{flags:04X}\t0\t0\t{metric}\t{}\t0\t0\t0\n",
                hex(*dst),
                hex(*mask)
            ));
        }
        t
    }

    #[test]
    fn longest_prefix_then_metric_wins() {
        let t = table(&[
            ("eth0", Ipv4Addr::UNSPECIFIED, 3, 0, Ipv4Addr::UNSPECIFIED),
            (
                "veth-a",
                Ipv4Addr::new(198, 18, 0, 0),
                1,
                0,
                Ipv4Addr::new(255, 255, 255, 0),
            ),
            (
                "veth-b",
                Ipv4Addr::new(198, 19, 0, 0),
                1,
                5,
                Ipv4Addr::new(255, 255, 0, 0),
            ),
            (
                "veth-c",
                Ipv4Addr::new(198, 19, 0, 0),
                1,
                1,
                Ipv4Addr::new(255, 255, 0, 0),
            ),
            (
                "down0",
                Ipv4Addr::new(198, 19, 1, 0),
                0,
                0,
                Ipv4Addr::new(255, 255, 255, 0),
            ),
        ]);
        let via = |a| egress_interface(&t, a);
        assert_eq!(via(Ipv4Addr::new(198, 18, 0, 9)).as_deref(), Some("veth-a"));
        assert_eq!(via(Ipv4Addr::new(198, 19, 1, 9)).as_deref(), Some("veth-c"));
        assert_eq!(via(Ipv4Addr::new(8, 8, 8, 8)).as_deref(), Some("eth0"));
        assert_eq!(egress_interface("Iface\n", Ipv4Addr::LOCALHOST), None);
    }

    #[test]
    fn real_kernel_text_parses() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        if cfg!(target_endian = "little") {
            let routes = parse(t);
            assert_eq!(routes.len(), 2);
            assert_eq!(routes[1].destination, Ipv4Addr::new(192, 168, 1, 0));
            assert_eq!(routes[1].prefix_len, 24);
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,400}", a in any::<u32>()) {
            let _ = egress_interface(&text, Ipv4Addr::from(a));
        }
    }
}
