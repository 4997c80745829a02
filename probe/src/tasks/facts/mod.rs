//! Node facts: the host's (or namespace's) network state as an engineer
//! reads it with `ip addr`, `ip route`, `ip route get`, `ip -d link`,
//! `iptables-save -t nat`, `nft list table ip kube-proxy`, `iptables -L -v`
//! twice, `conntrack -C` and `conntrack -L --orig-dst`, `nstat` and
//! `/proc`: interfaces with every address, routes and the kernel's
//! decision for the addresses asked, tunnels, kube-proxy NAT paths
//! (iptables or nftables mode) and the conntrack entries that show which
//! endpoint a test flow got, the DROP/REJECT rules that counted packets
//! while the run's checks ran, conntrack use, drop and listen counters,
//! ephemeral ports, load, SELinux, forwarding.
//!
//! Map: [`proc`], [`iproute`], [`iptables`], [`nft`], [`conntrack`] and
//! [`counters`] are sans-IO parsers with fixtures ([`nat`] the NAT walk's
//! shape both kube-proxy backends share); [`read`] is the I/O; [`run`] puts
//! the facts together. A fact that cannot be read goes to
//! [`NodeFacts::unavailable`] with the reason; the task never fails for one
//! missing fact.
//!
//! Sources and why:
//! - NAT rules come from `iptables-save -t nat` and `nft -j list table
//!   ip|ip6 kube-proxy`: the rules live in the kernel behind the iptables
//!   ABI or nftables' netlink, and decoding either without the binaries is
//!   not feasible here; nft's JSON is read into typed structs, bounded.
//! - Conntrack entries come from `/proc/thread-self/net/nf_conntrack`
//!   (this namespace's table, read line by line and bounded), which needs
//!   no `conntrack` binary.
//! - Routes come from `ip -j route show table all` (every table, IPv6,
//!   metrics such as a per-route MTU); when `ip` is missing, the IPv4 main
//!   table from `/proc/thread-self/net/route`.
//! - Tunnels and link MTUs come from `ip -j -d link show` (see [`iproute`]).
//! - Counters come from `/proc/thread-self/net/dev`, not `/sys/class/net`,
//!   which shows the namespace that mounted `/sys` (see [`read`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::{Error, Result};
use super::listener::{self, Protocol};
use crate::interfaces::Interface;
use read::Unreadable;

pub mod conntrack;
pub mod counters;
pub mod iproute;
pub mod iptables;
pub mod nat;
pub mod nft;
pub mod proc;
pub mod read;

/// Most NAT rules reported.
pub const MAX_NAT_RULES: usize = 5_000;
/// Most addresses whose route decision one task asks for.
pub const MAX_ROUTE_LOOKUPS: usize = 16;
/// Longest counter window.
pub const MAX_COUNTER_WINDOW: Duration = Duration::from_secs(10);

/// A validated node-facts task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeFactsSpec {
    /// NAT paths for packets to this IP (a ClusterIP, a node IP).
    pub match_ip: Option<IpAddr>,
    /// NAT paths for packets to this port.
    pub match_port: Option<u16>,
    /// Addresses to ask the kernel's route for (at most
    /// [`MAX_ROUTE_LOOKUPS`]).
    pub route_lookups: Vec<IpAddr>,
    /// Read the DROP/REJECT counters at the start and again after this
    /// long (at most [`MAX_COUNTER_WINDOW`]).
    pub counter_window: Option<Duration>,
}

impl NodeFactsSpec {
    fn has_match(&self) -> bool {
        self.match_ip.is_some() || self.match_port.is_some()
    }
}

/// Counters of one interface (packets, not bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevStats {
    /// Interface name.
    pub name: String,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Received packets dropped by the kernel.
    pub rx_dropped: u64,
    /// Packets dropped before sending.
    pub tx_dropped: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped by the interface's qdiscs (`tc -s qdisc`).
    pub qdisc_drops: u64,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// `default` or a prefix.
    pub destination: String,
    /// Next hop; empty when on-link.
    pub gateway: String,
    /// Output interface.
    pub device: String,
    /// Preferred source address; empty when unset.
    pub source: String,
    /// Per-route MTU in bytes; 0 when unset.
    pub mtu: u32,
    /// Table name or number (`main`, `100`).
    pub table: String,
    /// The route as `ip route` prints it (or the `/proc` line).
    pub raw: String,
}

/// The kernel's route for one address (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteDecision {
    /// The address asked.
    pub destination: String,
    /// `unicast`, `local`, … or the refusal: `blackhole`, `unreachable`,
    /// `prohibit`, `no_route`.
    pub kind: String,
    /// Output device; empty when refused.
    pub device: String,
    /// Next hop; empty when on-link or refused.
    pub gateway: String,
    /// As `ip route get` prints it, or the refusal.
    pub decision: String,
}

/// A tunnel device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tunnel {
    /// Device name (`flannel.1`, `tunl0`).
    pub device: String,
    /// `vxlan`, `ipip`, `gre`, `geneve`, …
    pub kind: String,
    /// VXLAN/Geneve network identifier; 0 otherwise.
    pub vni: u32,
    /// Outer source address; empty when unset (the kernel picks one).
    pub local: String,
    /// Outer destination (or multicast group); empty when per-FDB entry.
    pub remote: String,
    /// Outer UDP destination port (VXLAN: 8472 for flannel, 4789 IANA).
    pub dst_port: u32,
    /// Underlay device; empty when unset.
    pub underlay_device: String,
    /// Tunnel device MTU, bytes.
    pub mtu: u32,
}

/// Everything read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeFacts {
    /// Kernel hostname (UTS namespace of the probe).
    pub hostname: String,
    /// Interfaces, with MTU, state and every address.
    pub interfaces: Vec<Interface>,
    /// Per-interface counters.
    pub stats: Vec<DevStats>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Tunnel devices.
    pub tunnels: Vec<Tunnel>,
    /// NAT rules: those on the matched paths, or every kube-proxy rule.
    pub nat_rules: Vec<nat::ListedRule>,
    /// Rendered Service paths (`KUBE-SERVICES -> … -> DNAT ip:port`,
    /// `services -> @service-ips -> … -> DNAT ip:port`).
    pub nat_paths: Vec<String>,
    /// The same paths, structured, each with its backend.
    pub nat_walk: Vec<nat::NatPath>,
    /// The backends whose kube-proxy rules exist here.
    pub kube_proxy_backends: Vec<nat::Backend>,
    /// Conntrack entries of flows to the matched address (and port).
    pub conntrack_flows: Vec<conntrack::Flow>,
    /// Connection-tracking entries in use.
    pub conntrack_count: u64,
    /// Connection-tracking table size.
    pub conntrack_max: u64,
    /// TcpExt ListenOverflows: accept queue full.
    pub listen_overflows: u64,
    /// TcpExt ListenDrops: SYNs dropped at listeners.
    pub listen_drops: u64,
    /// Ephemeral port range, inclusive; (0, 0) when unknown.
    pub ephemeral_range: (u16, u16),
    /// TCP sockets whose local port lies in the ephemeral range.
    pub ephemeral_in_use: u32,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: (f64, f64, f64),
    /// `enforcing`, `permissive`, `disabled` or `absent`.
    pub selinux: String,
    /// IPv4 forwarding enabled.
    pub ip_forward: bool,
    /// Facts that could not be read, each "fact: reason".
    pub unavailable: Vec<String>,
    /// The kernel's route for each address asked.
    pub route_decisions: Vec<RouteDecision>,
    /// DROP/REJECT rules whose counters grew during the counter window.
    pub rule_hits: Vec<counters::RuleHits>,
}

impl NodeFacts {
    fn missing(&mut self, fact: &str, why: &Unreadable) {
        self.unavailable.push(format!("{fact}: {}", why.describe()));
    }
}

/// Reads every fact of the calling thread's network namespace. Takes at
/// most a few times [`read::COMMAND_TIMEOUT`] beyond the counter window;
/// cancellable. `stop` ends the counter window early: the counters are
/// read at once (the caller knows the packets they wait for have passed).
pub async fn run(
    spec: &NodeFactsSpec,
    stop: &CancellationToken,
    cancel: &CancellationToken,
) -> Result<NodeFacts> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Error::Cancelled { done: 0, total: 1 }),
        facts = gather(spec, stop) => Ok(facts),
    }
}

async fn gather(spec: &NodeFactsSpec, stop: &CancellationToken) -> NodeFacts {
    let started = tokio::time::Instant::now();
    let before = match spec.counter_window {
        Some(_) => Some(counted().await),
        None => None,
    };
    let mut facts = NodeFacts {
        interfaces: crate::interfaces::list(),
        ..NodeFacts::default()
    };
    match read::file("/proc/sys/kernel/hostname") {
        Ok(h) => h.trim().clone_into(&mut facts.hostname),
        Err(e) => facts.missing("hostname", &e),
    }
    links(&mut facts).await;
    counters(&mut facts).await;
    routes(&mut facts).await;
    nat(&mut facts, spec).await;
    kernel(&mut facts);
    route_decisions(&mut facts, &spec.route_lookups).await;
    if let (Some(window), Some(before)) = (spec.counter_window, before) {
        tokio::select! {
            () = tokio::time::sleep_until(started + window) => {}
            () = stop.cancelled() => {}
        }
        match (before, counted().await) {
            (Ok(before), Ok(after)) => facts.rule_hits = counters::grown(&before, &after),
            (Err(e), _) | (_, Err(e)) => facts.missing("rule counters", &e),
        }
    }
    if let Some(ip) = spec.match_ip {
        conntrack_flows(&mut facts, ip, spec.match_port);
    }
    facts
}

/// The conntrack entries of flows to `ip` (and `port`), read last, after
/// the checks had their time.
fn conntrack_flows(facts: &mut NodeFacts, ip: IpAddr, port: Option<u16>) {
    let path = format!("{}/nf_conntrack", listener::PROC_NET);
    match read::lines_matching(&path, conntrack::MAX_LINES, |l| conntrack::mentions(l, ip)) {
        Ok(lines) => {
            facts.conntrack_flows = conntrack::flows_to(lines.iter().map(String::as_str), ip, port);
        }
        Err(Unreadable::Missing) => facts
            .unavailable
            .push("conntrack flows: no nf_conntrack table".to_owned()),
        Err(e) => facts.missing("conntrack flows", &e),
    }
}

/// Every table's DROP/REJECT rules with their packet counters.
async fn counted() -> std::result::Result<Vec<counters::Counted>, Unreadable> {
    read::command("iptables-save", &["-c"])
        .await
        .map(|text| counters::parse(&text))
}

/// The kernel's route for each address, refusals included.
async fn route_decisions(facts: &mut NodeFacts, lookups: &[IpAddr]) {
    for ip in lookups.iter().take(MAX_ROUTE_LOOKUPS) {
        let dst = ip.to_string();
        let decision = match read::command("ip", &["-j", "route", "get", &dst]).await {
            Ok(json) => iproute::parse_route_get(&dst, &json),
            Err(e) => {
                let refused = iproute::refused_route(&dst, &e.describe());
                if refused.is_none() {
                    facts.missing(&format!("route to {dst}"), &e);
                }
                refused
            }
        };
        facts.route_decisions.extend(decision);
    }
}

/// Tunnels, and link MTUs as the namespace sees them.
async fn links(facts: &mut NodeFacts) {
    match read::command("ip", &["-j", "-d", "link", "show"]).await {
        Ok(json) => {
            facts.tunnels = iproute::parse_tunnels(&json);
            let mtus = iproute::parse_link_mtus(&json);
            for interface in &mut facts.interfaces {
                if let Some(&mtu) = mtus.get(&interface.name) {
                    interface.mtu = mtu;
                }
            }
        }
        Err(e) => facts.missing("tunnels", &e),
    }
}

async fn counters(facts: &mut NodeFacts) {
    match read::file(&format!("{}/dev", listener::PROC_NET)) {
        Ok(text) => facts.stats = proc::parse_net_dev(&text),
        Err(e) => facts.missing("interface counters", &e),
    }
    match read::command("tc", &["-s", "-j", "qdisc", "show"]).await {
        Ok(json) => {
            let drops = iproute::parse_qdisc_drops(&json);
            for stats in &mut facts.stats {
                stats.qdisc_drops = drops.get(&stats.name).copied().unwrap_or(0);
            }
        }
        Err(e) => facts.missing("qdisc drops", &e),
    }
}

async fn routes(facts: &mut NodeFacts) {
    match read::command("ip", &["-j", "route", "show", "table", "all"]).await {
        Ok(json) => facts.routes = iproute::parse_routes(&json),
        Err(e) => {
            facts.missing("routes (all tables)", &e);
            match read::file(&format!("{}/route", listener::PROC_NET)) {
                Ok(text) => facts.routes = proc::parse_net_route(&text),
                Err(e) => facts.missing("routes", &e),
            }
        }
    }
}

async fn nat(facts: &mut NodeFacts, spec: &NodeFactsSpec) {
    let m = iptables::NatMatch {
        ip: spec.match_ip,
        port: spec.match_port,
        local_addrs: local_addresses(&facts.interfaces),
    };
    iptables_nat(facts, spec, &m).await;
    for family in ["ip", "ip6"] {
        nft_nat(facts, spec, &m, family).await;
    }
    facts.nat_paths = facts.nat_walk.iter().map(nat::NatPath::render).collect();
}

/// kube-proxy's iptables mode: the KUBE-* chains of the nat table.
async fn iptables_nat(facts: &mut NodeFacts, spec: &NodeFactsSpec, m: &iptables::NatMatch) {
    let text = match read::command("iptables-save", &["-t", "nat"]).await {
        Ok(text) => text,
        Err(e) => return facts.missing("nat rules", &e),
    };
    let table = iptables::parse(&text);
    if table.chains.contains(iptables::SERVICES_CHAIN) {
        facts.kube_proxy_backends.push(nat::Backend::Iptables);
    }
    let paths = iptables::walk(&table, m);
    let listed = |r: &iptables::Rule| nat::ListedRule {
        table: r.table.clone(),
        chain: r.chain.clone(),
        text: r.text.clone(),
        target: r.target.clone(),
        to_destination: r.to_destination.clone(),
    };
    if spec.has_match() {
        let on_paths: BTreeSet<usize> =
            paths.iter().flat_map(|p| p.rules.iter().copied()).collect();
        facts.nat_rules.extend(
            on_paths
                .into_iter()
                .filter_map(|i| table.rules.get(i))
                .map(listed),
        );
    } else {
        facts.nat_rules.extend(
            table
                .rules
                .iter()
                .filter(|r| r.chain.starts_with("KUBE-") || r.target.starts_with("KUBE-"))
                .take(MAX_NAT_RULES)
                .map(listed),
        );
    }
    facts.nat_walk.extend(paths.into_iter().map(|p| p.path));
}

/// kube-proxy's nftables mode: its `FAMILY kube-proxy` table. A node
/// without the table is a node in another mode and says nothing; without
/// nft, or with an unreadable table, the fact is missing (once).
async fn nft_nat(
    facts: &mut NodeFacts,
    spec: &NodeFactsSpec,
    m: &iptables::NatMatch,
    family: &str,
) {
    let json = match read::command("nft", &["-j", "list", "table", family, nft::TABLE]).await {
        Ok(json) => json,
        Err(Unreadable::Other(why))
            if why.contains("No such file or directory")
                || (why.ends_with("not installed") && family != "ip") =>
        {
            return;
        }
        Err(e) => return facts.missing(&format!("nftables table {family} kube-proxy"), &e),
    };
    let table = match nft::parse(&json) {
        Ok(table) => table,
        Err(e) => {
            return facts
                .unavailable
                .push(format!("nftables table {family} kube-proxy: {e}"));
        }
    };
    if table.chains.contains_key(nft::SERVICES_CHAIN) {
        facts.kube_proxy_backends.push(nat::Backend::Nftables);
    }
    let paths = nft::walk(&table, m);
    let on_paths: BTreeSet<&str> = paths
        .iter()
        .flat_map(|p| p.chains.iter().map(String::as_str))
        .collect();
    let label = table.label();
    facts.nat_rules.extend(
        table
            .rules
            .iter()
            .filter(|r| !spec.has_match() || on_paths.contains(r.chain.as_str()))
            .take(MAX_NAT_RULES)
            .map(|r| nft_listed(&label, r)),
    );
    facts.nat_walk.extend(paths);
}

/// An nftables rule as node facts list it: its verdict or NAT as the target.
fn nft_listed(table: &str, r: &nft::Rule) -> nat::ListedRule {
    let mut target = String::new();
    let mut to_destination = String::new();
    for s in &r.stmts {
        match s {
            nft::Stmt::Dnat(addr, port) => {
                "dnat".clone_into(&mut target);
                to_destination = match (addr, port) {
                    (Some(a), Some(p)) => format!("{a}:{p}"),
                    (Some(a), None) => a.clone(),
                    _ => String::new(),
                };
            }
            nft::Stmt::Verdict(nft::Verdict::Jump(t) | nft::Verdict::Goto(t)) => {
                t.clone_into(&mut target);
            }
            nft::Stmt::Vmap(..) => "vmap".clone_into(&mut target),
            nft::Stmt::Reject => "reject".clone_into(&mut target),
            _ => {}
        }
    }
    nat::ListedRule {
        table: table.to_owned(),
        chain: r.chain.clone(),
        text: nft::render(r),
        target,
        to_destination,
    }
}

/// Every address of the namespace, from `ip/prefix` strings.
fn local_addresses(interfaces: &[Interface]) -> Vec<IpAddr> {
    interfaces
        .iter()
        .flat_map(|i| &i.addresses)
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

/// Conntrack, netstat, ports, load, SELinux, forwarding.
fn kernel(facts: &mut NodeFacts) {
    let count = read::file("/proc/sys/net/netfilter/nf_conntrack_count");
    let max = read::file("/proc/sys/net/netfilter/nf_conntrack_max");
    match (count, max) {
        (Ok(c), Ok(m)) => {
            facts.conntrack_count = proc::parse_u64(&c).unwrap_or(0);
            facts.conntrack_max = proc::parse_u64(&m).unwrap_or(0);
        }
        (Err(Unreadable::Missing), _) | (_, Err(Unreadable::Missing)) => facts
            .unavailable
            .push("conntrack: module not loaded".to_owned()),
        (Err(e), _) | (_, Err(e)) => facts.missing("conntrack", &e),
    }
    match read::file(&format!("{}/netstat", listener::PROC_NET)) {
        Ok(text) => {
            let counters = proc::parse_netstat(&text);
            let get = |name: &str| {
                counters
                    .get(&("TcpExt".to_owned(), name.to_owned()))
                    .copied()
                    .unwrap_or(0)
            };
            facts.listen_overflows = get("ListenOverflows");
            facts.listen_drops = get("ListenDrops");
        }
        Err(e) => facts.missing("listen overflows", &e),
    }
    match read::file("/proc/sys/net/ipv4/ip_local_port_range").map(|t| proc::parse_port_range(&t)) {
        Ok(Some(range)) => {
            facts.ephemeral_range = range;
            facts.ephemeral_in_use = ephemeral_in_use(range, facts);
        }
        Ok(None) => facts
            .unavailable
            .push("ephemeral ports: unparsable range".to_owned()),
        Err(e) => facts.missing("ephemeral ports", &e),
    }
    match read::file("/proc/loadavg").map(|t| proc::parse_loadavg(&t)) {
        Ok(Some(load)) => facts.load = load,
        Ok(None) => facts
            .unavailable
            .push("load average: unparsable".to_owned()),
        Err(e) => facts.missing("load average", &e),
    }
    facts.selinux = match read::file("/sys/fs/selinux/enforce") {
        Ok(text) => proc::parse_selinux_enforce(&text)
            .unwrap_or("unknown")
            .to_owned(),
        Err(Unreadable::Missing) if std::path::Path::new("/sys/fs/selinux").exists() => {
            "disabled".to_owned()
        }
        Err(Unreadable::Missing) => "absent".to_owned(),
        Err(e) => {
            facts.missing("selinux", &e);
            "unknown".to_owned()
        }
    };
    match read::file("/proc/sys/net/ipv4/ip_forward").map(|t| proc::parse_bool(&t)) {
        Ok(Some(on)) => facts.ip_forward = on,
        Ok(None) => facts.unavailable.push("ip_forward: unparsable".to_owned()),
        Err(e) => facts.missing("ip_forward", &e),
    }
}

/// TCP sockets (not listeners) whose local port is in `range`.
fn ephemeral_in_use(range: (u16, u16), facts: &mut NodeFacts) -> u32 {
    let mut in_use = 0u32;
    for protocol in [Protocol::Tcp, Protocol::Tcp6] {
        match listener::read_table(protocol) {
            Ok(entries) => {
                let n = entries
                    .iter()
                    .filter(|e| e.state != 0x0A && (range.0..=range.1).contains(&e.local.port()))
                    .count();
                in_use = in_use.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            }
            Err(e) if protocol == Protocol::Tcp => {
                facts
                    .unavailable
                    .push(format!("ephemeral ports in use: {e}"));
            }
            Err(_) => {}
        }
    }
    in_use
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_drop_prefixes() {
        let interfaces = vec![Interface {
            name: "eth0".into(),
            addresses: vec![
                "198.18.0.11/24".into(),
                "198.18.0.21/24".into(),
                "bad".into(),
            ],
            ..Default::default()
        }];
        let addrs: Vec<String> = local_addresses(&interfaces)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addrs, ["198.18.0.11", "198.18.0.21"]);
    }

    #[tokio::test]
    async fn the_host_facts_never_fail() {
        let none = CancellationToken::new();
        let facts = run(&NodeFactsSpec::default(), &none, &none).await.unwrap();
        assert!(facts.interfaces.iter().any(|i| i.name == "lo"));
        assert!(!facts.hostname.is_empty());
        assert!(facts.ephemeral_range.0 > 0, "{:?}", facts.unavailable);
        assert!(!facts.selinux.is_empty());
    }

    #[tokio::test]
    async fn a_stop_ends_the_counter_window_at_once() {
        let spec = NodeFactsSpec {
            counter_window: Some(Duration::from_secs(9)),
            ..NodeFactsSpec::default()
        };
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stopper.cancel();
        });
        let started = std::time::Instant::now();
        run(&spec, &stop, &CancellationToken::new()).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the window ended with the stop: {:?}",
            started.elapsed()
        );
    }
}
