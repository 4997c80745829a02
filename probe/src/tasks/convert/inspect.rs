//! Wire conversions of the inspect family: DNS, listeners and node facts.
//! `pb` tasks become validated specs (typed `Invalid*` errors naming the
//! field and its range); domain results become `pb` messages.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use probemesh_proto::pb;

use super::{MIN_DURATION, nanos, parse_ip};
use crate::interfaces::Interface;
use crate::tasks::dns::{DEFAULT_TIMEOUT, DnsReport, DnsSpec, MAX_SERVERS, MAX_TIMEOUT};
use crate::tasks::facts::nat::{Backend, NatEnd, NatPath};
use crate::tasks::facts::{MAX_COUNTER_WINDOW, MAX_ROUTE_LOOKUPS, NodeFacts, NodeFactsSpec};
use crate::tasks::listener::{Listener, ListenerSpec};

/// Longest DNS name accepted, bytes (253 plus a trailing dot).
const MAX_NAME_LEN: usize = 254;

/// Why a `pb::DnsTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDnsTask {
    /// Empty, too long, or with characters no DNS name has.
    #[error(
        "dns.name: {0:?} is not a DNS name (1..=253 bytes of letters, digits, '-', '_', '.', optionally a trailing dot)"
    )]
    Name(String),
    /// A server that is not `IP`, `IP:PORT` or `[IPv6]:PORT`.
    #[error("dns.servers: {0:?} is not IP[:PORT] (port 1..=65535)")]
    Server(String),
    /// More servers than one task asks.
    #[error("dns.servers: {0} servers; at most 8")]
    TooManyServers(usize),
    /// A record type hickory does not know.
    #[error(
        "dns.record_type: {0:?} is not a DNS record type (A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, ...)"
    )]
    RecordType(String),
}

/// Why a `pb::ListenerTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidListenerTask {
    /// Above 65535.
    #[error("listener.port: {0} is out of range 0..=65535 (0 = every port)")]
    Port(u32),
}

/// Why a `pb::NodeFactsTask` is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNodeFactsTask {
    /// Not an IP address.
    #[error("node_facts.match_ip: {0:?} is not an IP address (empty = any)")]
    MatchIp(String),
    /// Above 65535.
    #[error("node_facts.match_port: {0} is out of range 0..=65535 (0 = any)")]
    MatchPort(u32),
    /// A route lookup that is not an IP address.
    #[error("node_facts.route_lookups: {0:?} is not an IP address")]
    RouteLookup(String),
    /// More lookups than one task may ask.
    #[error("node_facts.route_lookups: {0} addresses; at most {MAX_ROUTE_LOOKUPS}")]
    TooManyLookups(usize),
    /// A counter window above the bound.
    #[error("node_facts.counter_window_us: {0} us is longer than {MAX_COUNTER_WINDOW:?}")]
    CounterWindow(u64),
}

fn is_dns_name(name: &str) -> bool {
    let bare = name.strip_suffix('.').unwrap_or(name);
    !bare.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !bare.contains("..")
        && !bare.starts_with('.')
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when absent.
fn parse_server(text: &str) -> Option<SocketAddr> {
    if let Some(ip) = parse_ip(text) {
        return Some(SocketAddr::new(ip, 53));
    }
    text.parse::<SocketAddr>().ok().filter(|s| s.port() != 0)
}

impl TryFrom<pb::DnsTask> for DnsSpec {
    type Error = InvalidDnsTask;

    fn try_from(task: pb::DnsTask) -> Result<Self, InvalidDnsTask> {
        if !is_dns_name(&task.name) {
            return Err(InvalidDnsTask::Name(task.name));
        }
        if task.servers.len() > MAX_SERVERS {
            return Err(InvalidDnsTask::TooManyServers(task.servers.len()));
        }
        let servers = task
            .servers
            .iter()
            .map(|s| parse_server(s.trim()).ok_or_else(|| InvalidDnsTask::Server(s.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let record_type = match task.record_type.trim() {
            "" => RecordType::A,
            t => RecordType::from_str(&t.to_ascii_uppercase())
                .map_err(|_| InvalidDnsTask::RecordType(task.record_type.clone()))?,
        };
        let timeout = match task.timeout_us {
            0 => DEFAULT_TIMEOUT,
            us => Duration::from_micros(us).clamp(MIN_DURATION, MAX_TIMEOUT),
        };
        Ok(DnsSpec {
            name: task.name,
            servers,
            compare: task.compare,
            timeout,
            record_type,
            resolv_conf_paths: Vec::new(),
        })
    }
}

impl TryFrom<pb::ListenerTask> for ListenerSpec {
    type Error = InvalidListenerTask;

    fn try_from(task: pb::ListenerTask) -> Result<Self, InvalidListenerTask> {
        let port = u16::try_from(task.port).map_err(|_| InvalidListenerTask::Port(task.port))?;
        Ok(ListenerSpec {
            port: (port != 0).then_some(port),
        })
    }
}

impl TryFrom<pb::NodeFactsTask> for NodeFactsSpec {
    type Error = InvalidNodeFactsTask;

    fn try_from(task: pb::NodeFactsTask) -> Result<Self, InvalidNodeFactsTask> {
        let match_ip = match task.match_ip.trim() {
            "" => None,
            ip => Some(
                parse_ip(ip).ok_or_else(|| InvalidNodeFactsTask::MatchIp(task.match_ip.clone()))?,
            ),
        };
        let port = u16::try_from(task.match_port)
            .map_err(|_| InvalidNodeFactsTask::MatchPort(task.match_port))?;
        if task.route_lookups.len() > MAX_ROUTE_LOOKUPS {
            return Err(InvalidNodeFactsTask::TooManyLookups(
                task.route_lookups.len(),
            ));
        }
        let route_lookups = task
            .route_lookups
            .iter()
            .map(|a| parse_ip(a.trim()).ok_or_else(|| InvalidNodeFactsTask::RouteLookup(a.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let window = Duration::from_micros(task.counter_window_us);
        if window > MAX_COUNTER_WINDOW {
            return Err(InvalidNodeFactsTask::CounterWindow(task.counter_window_us));
        }
        Ok(NodeFactsSpec {
            match_ip,
            match_port: (port != 0).then_some(port),
            route_lookups,
            counter_window: (!window.is_zero()).then_some(window),
        })
    }
}

/// The wire result of a DNS task.
pub fn dns_result(report: &DnsReport) -> pb::DnsResult {
    pb::DnsResult {
        name: report.name.clone(),
        answers: report
            .answers
            .iter()
            .map(|a| pb::DnsAnswer {
                server: a.server.to_string(),
                source: a.source.as_str().to_owned(),
                rcode: a.rcode.as_str().to_owned(),
                answers: a.answers.clone(),
                latency_ns: nanos(a.latency),
                detail: a.detail.clone(),
            })
            .collect(),
        resolv_conf_servers: report
            .resolv_conf
            .nameservers
            .iter()
            .map(|s| s.ip().to_string())
            .collect(),
        search: report.resolv_conf.search.clone(),
        conclusion: report.conclusion.clone(),
    }
}

/// The wire result of a listener task.
pub fn listener_result(listeners: &[Listener]) -> pb::ListenerResult {
    pb::ListenerResult {
        listeners: listeners
            .iter()
            .map(|l| pb::Listener {
                protocol: l.protocol.as_str().to_owned(),
                address: l.local.ip().to_string(),
                port: u32::from(l.local.port()),
                state: l.state.to_owned(),
                pid: l.owner.as_ref().map_or(0, |o| o.pid),
                process: l
                    .owner
                    .as_ref()
                    .map(|o| o.process.clone())
                    .unwrap_or_default(),
                recv_queue: l.recv_queue,
                send_queue: l.send_queue,
            })
            .collect(),
    }
}

impl From<&Interface> for pb::Interface {
    fn from(interface: &Interface) -> Self {
        pb::Interface {
            name: interface.name.clone(),
            mtu: interface.mtu,
            addresses: interface.addresses.clone(),
            up: interface.up,
        }
    }
}

fn backend(b: Backend) -> pb::NatBackend {
    match b {
        Backend::Iptables => pb::NatBackend::Iptables,
        Backend::Nftables => pb::NatBackend::Nftables,
    }
}

fn nat_path(p: &NatPath) -> pb::NatPath {
    let (end, to) = match &p.end {
        NatEnd::Dnat(to) => (pb::NatEnd::Dnat, to.clone()),
        NatEnd::Redirect(to) => (pb::NatEnd::Redirect, to.clone()),
        NatEnd::NoDnat => (pb::NatEnd::NoDnat, String::new()),
        NatEnd::Reject => (pb::NatEnd::Reject, String::new()),
        NatEnd::Drop => (pb::NatEnd::Drop, String::new()),
    };
    pb::NatPath {
        backend: backend(p.backend).into(),
        table: p.table.clone(),
        chains: p.chains.clone(),
        end: end.into(),
        to_destination: to,
        masquerade: p.masquerade,
    }
}

/// The wire form of node facts.
pub fn node_facts(facts: &NodeFacts) -> pb::NodeFacts {
    pb::NodeFacts {
        hostname: facts.hostname.clone(),
        interfaces: facts.interfaces.iter().map(Into::into).collect(),
        stats: facts
            .stats
            .iter()
            .map(|s| pb::InterfaceStats {
                name: s.name.clone(),
                rx_packets: s.rx_packets,
                tx_packets: s.tx_packets,
                rx_dropped: s.rx_dropped,
                tx_dropped: s.tx_dropped,
                rx_errors: s.rx_errors,
                tx_errors: s.tx_errors,
                qdisc_drops: s.qdisc_drops,
            })
            .collect(),
        routes: facts
            .routes
            .iter()
            .map(|r| pb::Route {
                destination: r.destination.clone(),
                gateway: r.gateway.clone(),
                device: r.device.clone(),
                source: r.source.clone(),
                mtu: r.mtu,
                table: r.table.clone(),
                raw: r.raw.clone(),
            })
            .collect(),
        tunnels: facts
            .tunnels
            .iter()
            .map(|t| pb::TunnelInfo {
                device: t.device.clone(),
                kind: t.kind.clone(),
                vni: t.vni,
                local: t.local.clone(),
                remote: t.remote.clone(),
                dst_port: t.dst_port,
                underlay_device: t.underlay_device.clone(),
                mtu: t.mtu,
            })
            .collect(),
        nat_rules: facts
            .nat_rules
            .iter()
            .map(|r| pb::NatRule {
                table: r.table.clone(),
                chain: r.chain.clone(),
                rule: r.text.clone(),
                target: r.target.clone(),
                to_destination: r.to_destination.clone(),
            })
            .collect(),
        nat_paths: facts.nat_paths.clone(),
        nat_walk: facts.nat_walk.iter().map(nat_path).collect(),
        kube_proxy_backends: facts
            .kube_proxy_backends
            .iter()
            .map(|b| i32::from(backend(*b)))
            .collect(),
        conntrack_flows: facts
            .conntrack_flows
            .iter()
            .map(|f| pb::ConntrackFlow {
                protocol: f.protocol.clone(),
                state: f.state.clone(),
                src: f.src.clone(),
                dst: f.dst.clone(),
                sport: u32::from(f.sport),
                dport: u32::from(f.dport),
                reply_src: f.reply_src.clone(),
                reply_sport: u32::from(f.reply_sport),
                assured: f.assured,
                unreplied: f.unreplied,
            })
            .collect(),
        conntrack_count: facts.conntrack_count,
        conntrack_max: facts.conntrack_max,
        listen_overflows: facts.listen_overflows,
        listen_drops: facts.listen_drops,
        ephemeral_port_low: u32::from(facts.ephemeral_range.0),
        ephemeral_port_high: u32::from(facts.ephemeral_range.1),
        ephemeral_ports_in_use: facts.ephemeral_in_use,
        load1: facts.load.0,
        load5: facts.load.1,
        load15: facts.load.2,
        selinux: facts.selinux.clone(),
        ip_forward: facts.ip_forward,
        unavailable: facts.unavailable.clone(),
        route_decisions: facts
            .route_decisions
            .iter()
            .map(|d| pb::RouteDecision {
                destination: d.destination.clone(),
                kind: d.kind.clone(),
                device: d.device.clone(),
                gateway: d.gateway.clone(),
                decision: d.decision.clone(),
            })
            .collect(),
        rule_hits: facts
            .rule_hits
            .iter()
            .map(|h| pb::RuleHits {
                table: h.rule.table.clone(),
                chain: h.rule.chain.clone(),
                rule: h.rule.rule.clone(),
                target: h.rule.target.clone(),
                packets: h.rule.packets,
                grew_by: h.grew_by,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use test_case::test_case;

    fn dns(name: &str, servers: &[&str], record_type: &str) -> pb::DnsTask {
        pb::DnsTask {
            name: name.into(),
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            record_type: record_type.into(),
            ..Default::default()
        }
    }

    #[test]
    fn dns_defaults() {
        let spec = DnsSpec::try_from(dns("web.default.svc.cluster.local", &[], "")).unwrap();
        assert_eq!(spec.record_type, RecordType::A);
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert!(spec.asks_resolv_conf());
        let spec = DnsSpec::try_from(pb::DnsTask {
            timeout_us: u64::MAX,
            ..dns(
                "example.com.",
                &["198.18.0.1", "198.18.0.2:5353", "[::1]:53"],
                "aaaa",
            )
        })
        .unwrap();
        assert_eq!(spec.timeout, MAX_TIMEOUT);
        assert_eq!(spec.record_type, RecordType::AAAA);
        let servers: Vec<String> = spec.servers.iter().map(ToString::to_string).collect();
        assert_eq!(servers, ["198.18.0.1:53", "198.18.0.2:5353", "[::1]:53"]);
        assert!(!spec.asks_resolv_conf());
    }

    #[test_case(dns("", &[], ""), "dns.name: \"\" is not a DNS name (1..=253 bytes of letters, digits, '-', '_', '.', optionally a trailing dot)" ; "empty name")]
    #[test_case(dns("a..b", &[], ""), "dns.name: \"a..b\" is not a DNS name (1..=253 bytes of letters, digits, '-', '_', '.', optionally a trailing dot)" ; "empty label")]
    #[test_case(dns("web", &["dns.google"], ""), "dns.servers: \"dns.google\" is not IP[:PORT] (port 1..=65535)" ; "server name")]
    #[test_case(dns("web", &["198.18.0.1:0"], ""), "dns.servers: \"198.18.0.1:0\" is not IP[:PORT] (port 1..=65535)" ; "port 0")]
    #[test_case(dns("web", &[], "BOGUS"), "dns.record_type: \"BOGUS\" is not a DNS record type (A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, ...)" ; "type")]
    #[test_case(dns("web", &["1.1.1.1"; 9], ""), "dns.servers: 9 servers; at most 8" ; "too many")]
    fn invalid_dns_tasks(task: pb::DnsTask, message: &str) {
        assert_eq!(DnsSpec::try_from(task).unwrap_err().to_string(), message);
    }

    #[test]
    fn listener_and_facts_tasks() {
        let spec = ListenerSpec::try_from(pb::ListenerTask { port: 0 }).unwrap();
        assert_eq!(spec.port, None);
        assert_eq!(
            ListenerSpec::try_from(pb::ListenerTask { port: 70_000 }).unwrap_err(),
            InvalidListenerTask::Port(70_000)
        );
        let spec = NodeFactsSpec::try_from(pb::NodeFactsTask {
            match_ip: "198.18.200.80".into(),
            match_port: 80,
            route_lookups: vec!["198.18.100.10".into()],
            counter_window_us: 1_500_000,
        })
        .unwrap();
        assert_eq!(
            (spec.match_ip, spec.match_port),
            (Some(IpAddr::from([198, 18, 200, 80])), Some(80))
        );
        assert_eq!(spec.route_lookups, [IpAddr::from([198, 18, 100, 10])]);
        assert_eq!(spec.counter_window, Some(Duration::from_millis(1500)));
        let invalid =
            |task: pb::NodeFactsTask| NodeFactsSpec::try_from(task).unwrap_err().to_string();
        assert_eq!(
            invalid(pb::NodeFactsTask {
                match_ip: "web".into(),
                ..Default::default()
            }),
            "node_facts.match_ip: \"web\" is not an IP address (empty = any)"
        );
        assert_eq!(
            invalid(pb::NodeFactsTask {
                route_lookups: vec!["198.18.0.1".into(); 17],
                ..Default::default()
            }),
            "node_facts.route_lookups: 17 addresses; at most 16"
        );
        assert_eq!(
            invalid(pb::NodeFactsTask {
                route_lookups: vec!["gateway".into()],
                ..Default::default()
            }),
            "node_facts.route_lookups: \"gateway\" is not an IP address"
        );
        assert_eq!(
            invalid(pb::NodeFactsTask {
                counter_window_us: 60_000_000,
                ..Default::default()
            }),
            "node_facts.counter_window_us: 60000000 us is longer than 10s"
        );
    }
}
