//! Connection-tracking entries of the flows to one address, as
//! `/proc/net/nf_conntrack` lists them (what `conntrack -L --orig-dst IP
//! -o extended` prints): the original direction and the reply's source,
//! which is where a Service flow really went — kube-proxy picks the
//! endpoint at random, so only conntrack tells which DNAT a test
//! connection got. Sans-IO: lines in, entries out; reading them (bounded)
//! is [`super::read`]'s.

use std::net::IpAddr;

/// Most entries reported.
pub const MAX_FLOWS: usize = 32;
/// Most lines of the table read (a full table can hold millions).
pub const MAX_LINES: usize = 200_000;

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flow {
    /// `tcp`, `udp`, `icmp`, ...
    pub protocol: String,
    /// TCP state; empty for other protocols.
    pub state: String,
    /// Original source.
    pub src: String,
    /// Original destination.
    pub dst: String,
    /// Original source port (0 without ports).
    pub sport: u16,
    /// Original destination port.
    pub dport: u16,
    /// The reply's source: the backend when the flow was DNATed.
    pub reply_src: String,
    /// The reply's source port.
    pub reply_sport: u16,
    /// `[ASSURED]`.
    pub assured: bool,
    /// `[UNREPLIED]`.
    pub unreplied: bool,
}

impl Flow {
    /// Whether the reply comes from elsewhere than the original destination:
    /// the flow was DNATed there.
    pub fn rewritten(&self) -> bool {
        self.reply_src != self.dst || self.reply_sport != self.dport
    }
}

/// One line of `/proc/net/nf_conntrack`: `ipv4 2 tcp 6 117 TIME_WAIT
/// src=… dst=… sport=… dport=… src=… dst=… sport=… dport=… [ASSURED] …`.
pub fn parse_line(line: &str) -> Option<Flow> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let protocol = (*words.get(2)?).to_owned();
    let mut flow = Flow {
        protocol,
        ..Flow::default()
    };
    // `src=` opens a direction: the first is the original, the second the reply.
    let mut direction = 0u8;
    for w in words.iter().skip(5) {
        match w.split_once('=') {
            Some(("src", v)) => {
                direction += 1;
                match direction {
                    1 => v.clone_into(&mut flow.src),
                    2 => v.clone_into(&mut flow.reply_src),
                    _ => {}
                }
            }
            Some(("dst", v)) if direction == 1 => v.clone_into(&mut flow.dst),
            Some(("sport", v)) if direction == 1 => flow.sport = v.parse().ok()?,
            Some(("dport", v)) if direction == 1 => flow.dport = v.parse().ok()?,
            Some(("sport", v)) if direction == 2 => flow.reply_sport = v.parse().ok()?,
            Some(_) => {}
            None if direction == 0 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                (*w).clone_into(&mut flow.state);
            }
            None if *w == "[ASSURED]" => flow.assured = true,
            None if *w == "[UNREPLIED]" => flow.unreplied = true,
            None => {}
        }
    }
    (direction == 2).then_some(flow)
}

/// Whether `line` may be an entry to `ip` (a cheap test before parsing).
pub fn mentions(line: &str, ip: IpAddr) -> bool {
    line.contains(&format!("dst={ip} "))
}

/// The entries of `lines` whose original destination is `ip` (and `port`,
/// when given), at most [`MAX_FLOWS`].
pub fn flows_to<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    ip: IpAddr,
    port: Option<u16>,
) -> Vec<Flow> {
    let dst = ip.to_string();
    lines
        .into_iter()
        .filter(|l| mentions(l, ip))
        .filter_map(parse_line)
        .filter(|f| f.dst == dst && port.is_none_or(|p| f.dport == p))
        .take(MAX_FLOWS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = include_str!("fixtures/proc_net_nf_conntrack.txt");

    #[test]
    fn a_service_flow_shows_its_endpoint() {
        let flows = flows_to(TABLE.lines(), "198.18.200.80".parse().unwrap(), Some(80));
        assert_eq!(flows.len(), 1, "{flows:?}");
        let f = &flows[0];
        assert_eq!(
            (
                f.protocol.as_str(),
                f.state.as_str(),
                f.dst.as_str(),
                f.dport
            ),
            ("tcp", "TIME_WAIT", "198.18.200.80", 80)
        );
        assert_eq!((f.reply_src.as_str(), f.reply_sport), ("198.19.2.10", 8080));
        assert!(f.assured && !f.unreplied && f.rewritten());
        let dns = flows_to(TABLE.lines(), "198.18.200.10".parse().unwrap(), None);
        assert_eq!(dns.len(), 1);
        assert_eq!(
            (dns[0].protocol.as_str(), dns[0].state.as_str()),
            ("udp", "")
        );
        assert_eq!(dns[0].reply_src, "198.19.1.53");
        assert!(flows_to(TABLE.lines(), "198.18.200.80".parse().unwrap(), Some(81)).is_empty());
    }

    #[test]
    fn unreplied_and_garbage_lines() {
        let vxlan = flows_to(TABLE.lines(), "198.18.0.12".parse().unwrap(), Some(8472));
        assert!(vxlan[0].unreplied && !vxlan[0].rewritten());
        for bad in [
            "",
            "ipv4 2 tcp",
            "ipv4 2 tcp 6 1 X src=1 dst=2 sport=x",
            "src=a src=b",
        ] {
            assert_eq!(parse_line(bad), None, "{bad}");
        }
    }
}
