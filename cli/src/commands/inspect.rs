//! `meshctl inspect`: a probe's node facts and listeners (or a pod's,
//! through the probe), printed the way `ip -br addr`, `ip route`,
//! `iptables -t nat`, `netstat -i` and `ss -lntu` print them, with
//! `-o json`. DNS is `meshctl dig`.

use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;
use probemesh_proto::pb::task_result::Outcome;
use serde::Serialize;

use crate::client::{Endpoint, Failure, exit};
use crate::output::{OutputFormat, emit};

use super::{ErrorView, Finished, run_once};

/// `meshctl inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Probe to inspect: NAME or NAME@pod:NAMESPACE/POD.
    pub probe: String,
    /// Show the NAT path of packets to this IP (a ClusterIP or a node IP).
    #[arg(long)]
    pub ip: Option<String>,
    /// Show the NAT path to this port, and only listeners on it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub port: Option<u32>,
}

/// The JSON shape of `meshctl inspect -o json`.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    probe: String,
    match_ip: Option<String>,
    match_port: Option<u32>,
    facts_run_id: String,
    listeners_run_id: String,
    trace_ids: Vec<String>,
    facts: Option<FactsView>,
    listeners: Vec<ListenerView>,
    errors: Vec<ErrorView>,
}

/// Node facts, as JSON.
#[derive(Debug, Serialize)]
pub struct FactsView {
    hostname: String,
    interfaces: Vec<InterfaceView>,
    stats: Vec<StatsView>,
    routes: Vec<RouteView>,
    tunnels: Vec<TunnelView>,
    nat_paths: Vec<String>,
    nat_rules: Vec<NatRuleView>,
    conntrack_count: u64,
    conntrack_max: u64,
    listen_overflows: u64,
    listen_drops: u64,
    ephemeral_port_low: u32,
    ephemeral_port_high: u32,
    ephemeral_ports_in_use: u32,
    load: [f64; 3],
    selinux: String,
    ip_forward: bool,
    unavailable: Vec<String>,
}

/// An interface.
#[derive(Debug, Serialize)]
pub struct InterfaceView {
    name: String,
    up: bool,
    mtu: u32,
    addresses: Vec<String>,
}

/// Interface counters.
#[derive(Debug, Serialize)]
pub struct StatsView {
    name: String,
    rx_packets: u64,
    rx_errors: u64,
    rx_dropped: u64,
    tx_packets: u64,
    tx_errors: u64,
    tx_dropped: u64,
    qdisc_drops: u64,
}

/// A route.
#[derive(Debug, Serialize)]
pub struct RouteView {
    destination: String,
    gateway: String,
    device: String,
    source: String,
    mtu: u32,
    table: String,
    raw: String,
}

/// A tunnel device.
#[derive(Debug, Serialize)]
pub struct TunnelView {
    device: String,
    kind: String,
    vni: u32,
    local: String,
    remote: String,
    dst_port: u32,
    underlay_device: String,
    mtu: u32,
}

/// A NAT rule.
#[derive(Debug, Serialize)]
pub struct NatRuleView {
    chain: String,
    rule: String,
    target: String,
    to_destination: String,
}

/// A listening socket.
#[derive(Debug, Serialize)]
pub struct ListenerView {
    protocol: String,
    state: String,
    address: String,
    port: u32,
    recv_queue: u32,
    send_queue: u32,
    pid: u32,
    process: String,
}

impl From<pb::NodeFacts> for FactsView {
    fn from(f: pb::NodeFacts) -> Self {
        Self {
            hostname: f.hostname,
            interfaces: f
                .interfaces
                .into_iter()
                .map(|i| InterfaceView {
                    name: i.name,
                    up: i.up,
                    mtu: i.mtu,
                    addresses: i.addresses,
                })
                .collect(),
            stats: f
                .stats
                .into_iter()
                .map(|s| StatsView {
                    name: s.name,
                    rx_packets: s.rx_packets,
                    rx_errors: s.rx_errors,
                    rx_dropped: s.rx_dropped,
                    tx_packets: s.tx_packets,
                    tx_errors: s.tx_errors,
                    tx_dropped: s.tx_dropped,
                    qdisc_drops: s.qdisc_drops,
                })
                .collect(),
            routes: f
                .routes
                .into_iter()
                .map(|r| RouteView {
                    destination: r.destination,
                    gateway: r.gateway,
                    device: r.device,
                    source: r.source,
                    mtu: r.mtu,
                    table: r.table,
                    raw: r.raw,
                })
                .collect(),
            tunnels: f
                .tunnels
                .into_iter()
                .map(|t| TunnelView {
                    device: t.device,
                    kind: t.kind,
                    vni: t.vni,
                    local: t.local,
                    remote: t.remote,
                    dst_port: t.dst_port,
                    underlay_device: t.underlay_device,
                    mtu: t.mtu,
                })
                .collect(),
            nat_paths: f.nat_paths,
            nat_rules: f
                .nat_rules
                .into_iter()
                .map(|r| NatRuleView {
                    chain: r.chain,
                    rule: r.rule,
                    target: r.target,
                    to_destination: r.to_destination,
                })
                .collect(),
            conntrack_count: f.conntrack_count,
            conntrack_max: f.conntrack_max,
            listen_overflows: f.listen_overflows,
            listen_drops: f.listen_drops,
            ephemeral_port_low: f.ephemeral_port_low,
            ephemeral_port_high: f.ephemeral_port_high,
            ephemeral_ports_in_use: f.ephemeral_ports_in_use,
            load: [f.load1, f.load5, f.load15],
            selinux: f.selinux,
            ip_forward: f.ip_forward,
            unavailable: f.unavailable,
        }
    }
}

impl From<pb::Listener> for ListenerView {
    fn from(l: pb::Listener) -> Self {
        Self {
            protocol: l.protocol,
            state: l.state,
            address: l.address,
            port: l.port,
            recv_queue: l.recv_queue,
            send_queue: l.send_queue,
            pid: l.pid,
            process: l.process,
        }
    }
}

/// Runs `meshctl inspect`: a node-facts run, then a listener run.
pub async fn inspect(
    args: InspectArgs,
    endpoint: &Endpoint,
    output: OutputFormat,
) -> Result<u8, Failure> {
    if let Some(ip) = &args.ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(Failure::usage(format!("--ip: {ip:?} is not an IP address")));
    }
    let facts = run_once(
        endpoint,
        pb::RunRequest {
            from: args.probe.clone(),
            kind: Some(Kind::NodeFacts(pb::NodeFactsTask {
                match_ip: args.ip.clone().unwrap_or_default(),
                match_port: args.port.unwrap_or(0),
                ..Default::default()
            })),
        },
    )
    .await?;
    let listeners = run_once(
        endpoint,
        pb::RunRequest {
            from: args.probe.clone(),
            kind: Some(Kind::Listener(pb::ListenerTask {
                port: args.port.unwrap_or(0),
            })),
        },
    )
    .await?;
    let report = InspectReport::new(&args, facts, listeners);
    emit(output, &report, || report.lines())?;
    Ok(report.exit_code())
}

impl InspectReport {
    fn new(args: &InspectArgs, facts: Finished, listeners: Finished) -> Self {
        let mut errors = Vec::new();
        errors.extend(ErrorView::from_outcome(facts.outcome.as_ref()));
        errors.extend(ErrorView::from_outcome(listeners.outcome.as_ref()));
        let facts_view = match facts.outcome {
            Some(Outcome::NodeFacts(f)) => Some(FactsView::from(f)),
            _ => None,
        };
        let listener_views = match listeners.outcome {
            Some(Outcome::Listener(l)) => l.listeners.into_iter().map(Into::into).collect(),
            _ => Vec::new(),
        };
        Self {
            probe: args.probe.clone(),
            match_ip: args.ip.clone(),
            match_port: args.port,
            facts_run_id: facts.run_id,
            listeners_run_id: listeners.run_id,
            trace_ids: vec![facts.trace_id, listeners.trace_id],
            facts: facts_view,
            listeners: listener_views,
            errors,
        }
    }

    fn target(&self) -> String {
        match (&self.match_ip, self.match_port) {
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            (Some(ip), None) => ip.clone(),
            (None, Some(port)) => format!("port {port}"),
            (None, None) => "every Service".to_owned(),
        }
    }

    /// The report as the classic tools print each part.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(f) = &self.facts {
            lines.push(format!("probe {} (hostname {})", self.probe, f.hostname));
            lines.push(String::new());
            lines.push("# ip -br addr".into());
            for i in &f.interfaces {
                lines.push(format!(
                    "{:<16} {:<14} {}",
                    i.name,
                    if i.up { "UP" } else { "DOWN" },
                    i.addresses.join(" ")
                ));
            }
            lines.push(String::new());
            lines.push("# ip link (mtu)".into());
            for i in &f.interfaces {
                lines.push(format!("{:<16} mtu {}", i.name, i.mtu));
            }
            lines.push(String::new());
            lines.push("# ip route show table all".into());
            lines.extend(f.routes.iter().map(|r| r.raw.clone()));
            if !f.tunnels.is_empty() {
                lines.push(String::new());
                lines.push("# ip -d link (tunnels)".into());
                for t in &f.tunnels {
                    lines.push(tunnel_line(t));
                }
            }
            lines.push(String::new());
            lines.push(format!(
                "# NAT paths (iptables -t nat) for {}",
                self.target()
            ));
            if f.nat_paths.is_empty() {
                lines.push(format!(
                    "none: no KUBE-SERVICES rule matches {} (kube-proxy rules missing on this node?)",
                    self.target()
                ));
            }
            lines.extend(f.nat_paths.iter().cloned());
            if self.match_ip.is_some() || self.match_port.is_some() {
                lines.extend(f.nat_rules.iter().map(|r| format!("  {}", r.rule)));
            }
            lines.push(String::new());
            lines.push("# kernel".into());
            lines.push(conntrack_line(f));
            lines.push(format!(
                "listen queue: {} overflows, {} drops (TcpExt ListenOverflows/ListenDrops)",
                f.listen_overflows, f.listen_drops
            ));
            lines.push(format!(
                "ephemeral ports: {}-{}, {} in use",
                f.ephemeral_port_low, f.ephemeral_port_high, f.ephemeral_ports_in_use
            ));
            lines.push(format!(
                "load average: {:.2}, {:.2}, {:.2}",
                f.load[0], f.load[1], f.load[2]
            ));
            lines.push(format!(
                "selinux: {}   ip_forward: {}",
                f.selinux,
                u8::from(f.ip_forward)
            ));
            lines.push(String::new());
            lines.push("# netstat -i (packets)".into());
            lines.push(format!(
                "{:<16} {:>10} {:>7} {:>7} {:>10} {:>7} {:>7} {:>9}",
                "Iface", "RX-OK", "RX-ERR", "RX-DRP", "TX-OK", "TX-ERR", "TX-DRP", "QDISC-DRP"
            ));
            for s in &f.stats {
                lines.push(format!(
                    "{:<16} {:>10} {:>7} {:>7} {:>10} {:>7} {:>7} {:>9}",
                    s.name,
                    s.rx_packets,
                    s.rx_errors,
                    s.rx_dropped,
                    s.tx_packets,
                    s.tx_errors,
                    s.tx_dropped,
                    s.qdisc_drops
                ));
            }
            if !f.unavailable.is_empty() {
                lines.push(String::new());
                lines.push("# unavailable".into());
                lines.extend(f.unavailable.iter().map(|u| format!("  {u}")));
            }
        }
        lines.push(String::new());
        lines.push(format!(
            "# ss -lntu{}",
            self.match_port
                .map(|p| format!(" sport = :{p}"))
                .unwrap_or_default()
        ));
        lines.push(format!(
            "{:<6} {:<7} {:>6} {:>6} {:<40} Process",
            "Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port"
        ));
        for l in &self.listeners {
            let address = if l.address.contains(':') {
                format!("[{}]:{}", l.address, l.port)
            } else {
                format!("{}:{}", l.address, l.port)
            };
            let process = if l.pid > 0 {
                format!("users:((\"{}\",pid={}))", l.process, l.pid)
            } else {
                String::new()
            };
            lines.push(format!(
                "{:<6} {:<7} {:>6} {:>6} {:<40} {process}",
                l.protocol, l.state, l.recv_queue, l.send_queue, address
            ));
        }
        for e in &self.errors {
            lines.push(format!(
                "inspect failed on probe {}: {}",
                self.probe, e.message
            ));
        }
        lines.push(format!(
            "runs {} {} · traces {}",
            self.facts_run_id,
            self.listeners_run_id,
            self.trace_ids.join(" ")
        ));
        lines
    }

    /// 2 bad input; 3 a run failed; 1 when a Service target (--ip) has no
    /// NAT path to a DNAT, or when --port alone has no listener reachable
    /// from outside (none, or loopback only); 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        if let Some(code) = self.errors.iter().map(ErrorView::exit_code).min() {
            return code;
        }
        let Some(f) = &self.facts else {
            return exit::INCONCLUSIVE;
        };
        if self.match_ip.is_some() && !f.nat_paths.iter().any(|p| p.contains(" -> DNAT ")) {
            return exit::FAULT;
        }
        if self.match_ip.is_none()
            && self.match_port.is_some()
            && !self.listeners.iter().any(|l| !is_loopback(&l.address))
        {
            return exit::FAULT;
        }
        exit::OK
    }
}

fn is_loopback(address: &str) -> bool {
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn tunnel_line(t: &TunnelView) -> String {
    let mut parts = vec![format!("{:<16} {}", t.device, t.kind)];
    if t.kind == "vxlan" || t.kind == "geneve" {
        parts.push(format!("id {}", t.vni));
    }
    for (key, value) in [
        ("local", t.local.as_str()),
        ("remote", t.remote.as_str()),
        ("dev", t.underlay_device.as_str()),
    ] {
        if !value.is_empty() {
            parts.push(format!("{key} {value}"));
        }
    }
    if t.dst_port > 0 {
        parts.push(format!("dstport {}", t.dst_port));
    }
    parts.push(format!("mtu {}", t.mtu));
    parts.join(" ")
}

fn conntrack_line(f: &FactsView) -> String {
    if f.conntrack_max == 0 {
        return "conntrack: unknown (see unavailable)".to_owned();
    }
    // Counts far below 2^52: exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let pct = f.conntrack_count as f64 * 100.0 / f.conntrack_max as f64;
    format!(
        "conntrack: {}/{} ({pct:.1}%)",
        f.conntrack_count, f.conntrack_max
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect_args(ip: Option<&str>, port: Option<u32>) -> InspectArgs {
        InspectArgs {
            probe: "node-3".into(),
            ip: ip.map(Into::into),
            port,
        }
    }

    #[test]
    fn inspect_reports_missing_nat_paths_as_a_fault() {
        let facts = pb::NodeFacts {
            hostname: "mesh-node-3".into(),
            interfaces: vec![pb::Interface {
                name: "eth0".into(),
                mtu: 1500,
                addresses: vec!["198.18.0.13/24".into(), "198.18.0.23/24".into()],
                up: true,
            }],
            conntrack_count: 10,
            conntrack_max: 100,
            ..Default::default()
        };
        let listeners = pb::ListenerResult {
            listeners: vec![pb::Listener {
                protocol: "tcp".into(),
                address: "127.0.0.1".into(),
                port: 8080,
                state: "LISTEN".into(),
                pid: 42,
                process: "web".into(),
                ..Default::default()
            }],
        };
        let report = InspectReport::new(
            &inspect_args(Some("198.18.200.80"), Some(80)),
            Finished::with_outcome(Outcome::NodeFacts(facts.clone())),
            Finished::with_outcome(Outcome::Listener(listeners.clone())),
        );
        let text = report.lines().join("\n");
        assert!(
            text.contains("eth0             UP             198.18.0.13/24 198.18.0.23/24"),
            "{text}"
        );
        assert!(
            text.contains("none: no KUBE-SERVICES rule matches 198.18.200.80:80"),
            "{text}"
        );
        assert!(text.contains("conntrack: 10/100 (10.0%)"), "{text}");
        assert!(text.contains("127.0.0.1:8080"), "{text}");
        assert!(text.contains("users:((\"web\",pid=42))"), "{text}");
        assert_eq!(report.exit_code(), exit::FAULT);

        let loopback_only = InspectReport::new(
            &inspect_args(None, Some(8080)),
            Finished::with_outcome(Outcome::NodeFacts(facts)),
            Finished::with_outcome(Outcome::Listener(listeners)),
        );
        assert_eq!(loopback_only.exit_code(), exit::FAULT);
    }
}
