//! Plans a `meshctl probe` run the way an engineer works a path: basic
//! reachability (icmp) → the port (tcp_connect) → DNS when a name is
//! involved → large packets (icmp_large at `--size` with DF, tcp_transfer)
//! → node facts and NAT rules on every node involved; then, only when
//! something failed, the path (mtr) and the path MTU ([`follow_ups`]).
//! Checks run in both directions where both ends have probes, and every
//! check that cannot help is kept as `skipped` with the reason.
//!
//! Pure: the registry and inventory in, [`ProbePlan`] out. Each check is an
//! ordinary [`pb::RunRequest`], planned and dispatched like any tool run.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use probemesh_model::inventory::Inventory;
use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;

use super::target::{Endpoint, Resolved, Role};
use crate::capture::{self, plan::CapturePlan};
use crate::error::Error;
use crate::registry::Registry;
use crate::resolve;
use crate::state::PayloadPolicy;

/// Echoes per ICMP check when `--count` is not given: enough that a path
/// losing a fifth of its packets shows it (0.8^20 ≈ 1 % chance of no loss
/// in one direction).
pub const DEFAULT_COUNT: u32 = 20;
/// Gap between echoes.
const ICMP_INTERVAL: Duration = Duration::from_millis(20);
/// Echoes of the large-packet check (a black hole loses them all).
const LARGE_COUNT: u32 = 5;
/// TCP connects per endpoint.
const CONNECT_COUNT: u32 = 3;
/// Gap between TCP connects.
const CONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes pushed by tcp_transfer: many full-size segments.
const TRANSFER_BYTES: u64 = 64 * 1024;
/// Longest a transfer may stall before it counts as failed.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3);
/// Default wait per attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// ICMP payload of the plain reachability check (as ping's default).
pub const SMALL_SIZE: u32 = 56;
/// The capture window's upper bound; the run stops it when its checks end.
const CAPTURE_WINDOW: Duration = Duration::from_secs(90);
/// Packets kept per observer (headers only).
const CAPTURE_MAX_PACKETS: u64 = 200_000;
/// Interface name prefixes of overlay tunnels (flannel, Calico IPIP and
/// VXLAN, Cilium, Geneve, WireGuard).
const TUNNEL_PREFIXES: [&str; 6] = ["flannel", "tunl", "vxlan", "cilium_vxlan", "genev", "wg"];

/// The checks a run can make (`checks[].name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckName {
    /// ICMP echo, ping's default size.
    Icmp,
    /// ICMP echo at `--size` with DF.
    IcmpLarge,
    /// Repeated TCP connects.
    TcpConnect,
    /// Bytes pushed and acknowledged.
    TcpTransfer,
    /// Path MTU search.
    Pmtu,
    /// mtr-style hops.
    Path,
    /// Resolution.
    Dns,
    /// What listens on the port.
    Listener,
    /// Interfaces, routes, tunnels, conntrack, drops.
    NodeFacts,
    /// The Service's NAT chain on a node (read from node facts).
    NatRules,
    /// The synchronized captures.
    Capture,
}

impl CheckName {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Icmp => "icmp",
            CheckName::IcmpLarge => "icmp_large",
            CheckName::TcpConnect => "tcp_connect",
            CheckName::TcpTransfer => "tcp_transfer",
            CheckName::Pmtu => "pmtu",
            CheckName::Path => "path",
            CheckName::Dns => "dns",
            CheckName::Listener => "listener",
            CheckName::NodeFacts => "node_facts",
            CheckName::NatRules => "nat_rules",
            CheckName::Capture => "capture",
        }
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way a check goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the source towards the target.
    Forward,
    /// From the target's side back to the source.
    Reverse,
    /// On one host (listeners, node facts).
    Local,
}

impl Direction {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
            Direction::Local => "local",
        }
    }
}

/// What the user asked besides the ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// ICMP payload of the large check; `None`: no large check.
    pub size: Option<u32>,
    /// Echoes per ICMP check.
    pub count: u32,
    /// Wait per attempt.
    pub timeout: Duration,
    /// Synchronized captures on every observer.
    pub capture: bool,
}

impl Options {
    /// From the request, with defaults.
    pub fn from_request(req: &pb::ProbeRequest) -> Result<Self, Error> {
        if req.size > 65_507 {
            return Err(Error::InvalidRequest(format!(
                "--size {} is larger than an ICMP payload can be (65507)",
                req.size
            )));
        }
        if req.count > 1_000 {
            return Err(Error::InvalidRequest(format!(
                "--count {} is more than 1000 echoes per check",
                req.count
            )));
        }
        let timeout = match req.timeout_us {
            0 => DEFAULT_TIMEOUT,
            us => Duration::from_micros(us),
        };
        if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(30) {
            return Err(Error::InvalidRequest(
                "--timeout must be between 10ms and 30s".into(),
            ));
        }
        Ok(Self {
            size: (req.size > SMALL_SIZE).then_some(req.size),
            count: if req.count == 0 {
                DEFAULT_COUNT
            } else {
                req.count
            },
            timeout,
            capture: !req.no_capture,
        })
    }
}

/// Where the run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSide {
    /// As given: `PROBE` or `PROBE@pod:NS/NAME`.
    pub spec: String,
    /// The probe.
    pub probe: String,
    /// The pod, when the source is one: (namespace, name).
    pub pod: Option<(String, String)>,
    /// The address the far side answers to.
    pub address: Option<IpAddr>,
    /// The inventory node the probe runs on (none for external hosts).
    pub node: Option<String>,
}

impl SourceSide {
    /// Resolves `spec` through the registry and inventory.
    pub fn resolve(
        spec: &str,
        registry: &Registry,
        inventory: Option<&Inventory>,
    ) -> Result<Self, Error> {
        let source = resolve::source(spec, inventory)?;
        let hello = registry
            .hello(&source.probe)
            .ok_or_else(|| Error::UnknownProbe(source.probe.clone()))?;
        let pod = spec
            .split_once("@pod:")
            .and_then(|(_, pod)| pod.split_once('/'))
            .map(|(ns, name)| (ns.to_owned(), name.to_owned()));
        let address = match &pod {
            Some((ns, name)) => inventory.and_then(|i| i.pod(ns, name)).map(|p| p.ip),
            None => resolve::probe_address(&source.probe, &hello.interfaces, inventory),
        };
        Ok(Self {
            spec: spec.trim().to_owned(),
            node: inventory
                .and_then(|i| i.node_of_probe(&source.probe))
                .map(|n| n.name.clone()),
            probe: source.probe,
            pod,
            address,
        })
    }

    /// Outside the cluster: no inventory node.
    pub fn external(&self) -> bool {
        self.node.is_none()
    }
}

/// One check, planned.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCheck {
    /// Which check.
    pub name: CheckName,
    /// Who runs it (`PROBE` or `PROBE@pod:NS/NAME`).
    pub from: String,
    /// What it is aimed at, for people.
    pub to: String,
    /// Which way it goes.
    pub direction: Direction,
    /// ICMP payload, where it applies.
    pub size: u32,
    /// The run request to dispatch; `None` when skipped.
    pub request: Option<pb::RunRequest>,
    /// Why it is skipped, or what it is for.
    pub note: String,
    /// Passes when the far end answers at all (an upstream resolver asked
    /// for a cluster name answers NXDOMAIN, and that is what is asked).
    pub answer_is_enough: bool,
}

impl PlannedCheck {
    fn run(
        name: CheckName,
        from: &str,
        to: impl Into<String>,
        direction: Direction,
        kind: Kind,
    ) -> Self {
        let size = match &kind {
            Kind::Ping(p) => p.size,
            _ => 0,
        };
        Self {
            name,
            from: from.to_owned(),
            to: to.into(),
            direction,
            size,
            request: Some(pb::RunRequest {
                from: from.to_owned(),
                kind: Some(kind),
            }),
            note: String::new(),
            answer_is_enough: false,
        }
    }

    fn skip(name: CheckName, from: &str, to: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            name,
            from: from.to_owned(),
            to: to.into(),
            direction: Direction::Forward,
            size: 0,
            request: None,
            note: why.into(),
            answer_is_enough: false,
        }
    }

    /// A check that did not run, for tests that attach results by hand.
    #[cfg(test)]
    pub(crate) fn example(name: CheckName, from: &str, to: &str, direction: Direction) -> Self {
        Self {
            direction,
            size: SMALL_SIZE,
            ..Self::skip(name, from, to, "")
        }
    }

    fn noted(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn answer_is_enough(mut self) -> Self {
        self.answer_is_enough = true;
        self
    }
}

/// The whole run, before it starts.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    /// The source.
    pub source: SourceSide,
    /// The target, expanded.
    pub target: Resolved,
    /// Options in force.
    pub options: Options,
    /// The first wave of checks (all at once).
    pub checks: Vec<PlannedCheck>,
    /// Synchronized captures, unless `--no-capture` or nothing to observe.
    pub capture: Option<CapturePlan>,
    /// Why there is no capture, when there is none.
    pub capture_note: String,
}

/// Plans a probe run.
pub fn plan(
    from: &str,
    req: &pb::ProbeRequest,
    registry: &Registry,
    inventory: Option<&Inventory>,
    payload: PayloadPolicy,
    coordinator_port: u16,
) -> Result<ProbePlan, Error> {
    if req.to.trim().is_empty() {
        return Err(Error::InvalidRequest(
            "--to TARGET is required (e.g. nodeport:30080, svc:default/web, dns:NAME)".into(),
        ));
    }
    let options = Options::from_request(req)?;
    let source = SourceSide::resolve(from, registry, inventory)?;
    let target = super::target::resolve(req.to.trim(), registry, inventory)?;
    let checks = first_wave(&source, &target, &options, registry, inventory);
    let (capture, capture_note) = if !options.capture {
        (None, "--no-capture".to_owned())
    } else {
        let on = observers(&source, &target, &checks, registry, inventory);
        let filter = capture_filter(&source, &target, inventory, coordinator_port);
        let request = pb::CaptureRequest {
            on,
            filter,
            duration_us: u64::try_from(CAPTURE_WINDOW.as_micros()).unwrap_or(u64::MAX),
            max_packets: CAPTURE_MAX_PACKETS,
            ..Default::default()
        };
        (
            Some(capture::plan::plan(&request, payload, registry, inventory)?),
            String::new(),
        )
    };
    Ok(ProbePlan {
        source,
        target,
        options,
        checks,
        capture,
        capture_note,
    })
}

/// Whether `source` can aim at `e` at all, or why not.
fn reachable_from(source: &SourceSide, e: &Endpoint) -> Result<(), String> {
    if source.external() && e.role.is_pod() {
        return Err(
            "pod addresses are routed inside the cluster only; tested through the Service".into(),
        );
    }
    if source.external() && e.role == Role::ClusterIp {
        return Err("ClusterIPs answer inside the cluster only".into());
    }
    Ok(())
}

/// The checks that always run.
fn first_wave(
    source: &SourceSide,
    target: &Resolved,
    o: &Options,
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> Vec<PlannedCheck> {
    let from = source.spec.as_str();
    let timeout_us = micros(o.timeout);
    let mut checks = Vec::new();
    let ping = |to: &str, size: u32, count: u32| {
        Kind::Ping(pb::PingTask {
            target: to.to_owned(),
            size,
            dont_fragment: size > SMALL_SIZE,
            count,
            interval_us: micros(ICMP_INTERVAL),
            timeout_us,
            ttl: 0,
        })
    };
    if let Some(name) = &target.name {
        checks.extend(dns_checks(source, name, o, inventory));
    }
    let mut reverse_from: BTreeSet<String> = BTreeSet::new();
    let mut underlay: BTreeSet<String> = BTreeSet::new();
    for e in &target.endpoints {
        if let Err(why) = reachable_from(source, e) {
            checks.push(PlannedCheck::skip(CheckName::Icmp, from, e.address(), why));
            continue;
        }
        if e.role == Role::ClusterIp {
            checks.push(PlannedCheck::skip(
                CheckName::Icmp,
                from,
                &e.host,
                "a ClusterIP is virtual (kube-proxy NAT): nothing answers ping; its backends are pinged",
            ));
        } else {
            checks.push(PlannedCheck::run(
                CheckName::Icmp,
                from,
                &e.host,
                Direction::Forward,
                ping(&e.host, SMALL_SIZE, o.count),
            ));
            if let Some(size) = o.size {
                checks.push(PlannedCheck::run(
                    CheckName::IcmpLarge,
                    from,
                    &e.host,
                    Direction::Forward,
                    ping(&e.host, size, LARGE_COUNT),
                ));
            }
        }
        // The port: a given one, or the probe's responder.
        let tcp_target = match (e.port, e.role) {
            (Some(p), _) => Some((e.host.clone(), p)),
            (None, Role::Probe) => e.probe.as_ref().map(|p| (format!("probe:{p}"), 0)),
            _ => None,
        };
        match tcp_target {
            Some((host, port)) => {
                let to = if port == 0 {
                    format!("{} (responder of {host})", e.host)
                } else {
                    format!("{host}:{port}")
                };
                let connect = if port == 0 {
                    Kind::TcpTransfer(pb::TcpTransferTask {
                        host: host.clone(),
                        port: 0,
                        bytes: 1,
                        timeout_us: micros(o.timeout * CONNECT_COUNT),
                        responder: false,
                    })
                } else {
                    Kind::Tcping(pb::TcpingTask {
                        host: host.clone(),
                        port: u32::from(port),
                        count: CONNECT_COUNT,
                        timeout_us,
                        interval_us: micros(CONNECT_INTERVAL),
                    })
                };
                checks.push(PlannedCheck::run(
                    CheckName::TcpConnect,
                    from,
                    &to,
                    Direction::Forward,
                    connect,
                ));
                checks.push(PlannedCheck::run(
                    CheckName::TcpTransfer,
                    from,
                    &to,
                    Direction::Forward,
                    Kind::TcpTransfer(pb::TcpTransferTask {
                        host,
                        port: u32::from(port),
                        bytes: TRANSFER_BYTES,
                        timeout_us: micros(TRANSFER_TIMEOUT),
                        responder: false,
                    }),
                ));
            }
            None if target.name.is_none() => checks.push(PlannedCheck::skip(
                CheckName::TcpConnect,
                from,
                &e.host,
                "no port given (add :PORT to the target)",
            )),
            None => {}
        }
        // Back from the far side, where a probe stands there.
        if let (Some(back), Some(addr)) = (&e.probe, source.address)
            && *back != source.spec
            && !(source.external() && e.role.is_pod())
            && reverse_from.insert(back.clone())
        {
            let to = addr.to_string();
            checks.push(PlannedCheck::run(
                CheckName::Icmp,
                back,
                &to,
                Direction::Reverse,
                ping(&to, SMALL_SIZE, o.count),
            ));
            if let Some(size) = o.size {
                checks.push(PlannedCheck::run(
                    CheckName::IcmpLarge,
                    back,
                    &to,
                    Direction::Reverse,
                    ping(&to, size, LARGE_COUNT),
                ));
            }
        }
        // Node to node under the overlay, when a pod on another node is the aim.
        if e.role.is_pod()
            && let (Some(src_node), Some(dst_node)) = (&source.node, &e.node)
            && src_node != dst_node
            && let Some(dst) = inventory.and_then(|i| i.node(dst_node))
            && underlay.insert(dst_node.clone())
        {
            let to = dst.internal_ip.to_string();
            checks.push(
                PlannedCheck::run(
                    CheckName::Icmp,
                    &source.probe,
                    &to,
                    Direction::Forward,
                    ping(&to, SMALL_SIZE, o.count),
                )
                .noted(format!(
                    "node to node, under the overlay ({src_node} → {dst_node})"
                )),
            );
        }
        // What listens, inside the pod.
        if e.role.is_pod()
            && let (Some(port), Some(inside)) = (e.port, &e.probe)
        {
            checks.push(PlannedCheck::run(
                CheckName::Listener,
                inside,
                format!(":{port}"),
                Direction::Local,
                Kind::Listener(pb::ListenerTask {
                    port: u32::from(port),
                }),
            ));
        }
    }
    checks.extend(facts_checks(source, target, registry, inventory));
    checks
}

/// DNS: the source's own resolver (and, with an inventory, cluster DNS by
/// ClusterIP and by pod address, compared); from a pod, also its node's
/// resolver, which is the upstream DNS.
fn dns_checks(
    source: &SourceSide,
    name: &str,
    o: &Options,
    inventory: Option<&Inventory>,
) -> Vec<PlannedCheck> {
    let mut servers = Vec::new();
    if let Some(dns) = cluster_dns(inventory) {
        servers.push(dns.cluster_ip.to_string());
        servers.extend(dns.endpoints.iter().map(|e| e.ip.to_string()));
    }
    let timeout_us = micros(o.timeout);
    let mut checks = vec![
        PlannedCheck::run(
            CheckName::Dns,
            &source.spec,
            name,
            Direction::Forward,
            Kind::Dns(pb::DnsTask {
                name: name.to_owned(),
                compare: !servers.is_empty(),
                servers,
                timeout_us,
                record_type: String::new(),
            }),
        )
        .noted("resolv.conf, compared with cluster DNS by ClusterIP and by pod"),
    ];
    if source.pod.is_some() {
        checks.push(
            PlannedCheck::run(
                CheckName::Dns,
                &source.probe,
                name,
                Direction::Forward,
                Kind::Dns(pb::DnsTask {
                    name: name.to_owned(),
                    servers: Vec::new(),
                    compare: false,
                    timeout_us,
                    record_type: String::new(),
                }),
            )
            .noted("the node's resolver: upstream DNS")
            .answer_is_enough(),
        );
    }
    checks
}

/// The cluster DNS Service (kube-system/kube-dns, as CoreDNS keeps it).
pub fn cluster_dns(inventory: Option<&Inventory>) -> Option<&probemesh_model::inventory::Service> {
    inventory?.service("kube-system", "kube-dns")
}

/// Node facts (and the Service's NAT chain) on every host involved.
fn facts_checks(
    source: &SourceSide,
    target: &Resolved,
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> Vec<PlannedCheck> {
    let (match_ip, match_port) = match (&target.service, &target.name) {
        (Some(svc), _) if svc.node_port => (String::new(), svc.port),
        (Some(svc), _) => (svc.cluster_ip.to_string(), svc.port),
        (None, Some(_)) => cluster_dns(inventory)
            .map_or((String::new(), 0), |dns| (dns.cluster_ip.to_string(), 53)),
        (None, None) => (String::new(), 0),
    };
    let mut hosts: Vec<String> = vec![source.probe.clone()];
    for e in &target.endpoints {
        let host_probe = e
            .node
            .as_deref()
            .and_then(|n| inventory?.node(n)?.probe.clone())
            .or_else(|| e.probe.as_ref().filter(|p| !p.contains('@')).cloned());
        if let Some(p) = host_probe
            && !hosts.contains(&p)
        {
            hosts.push(p);
        }
    }
    let to = if match_port == 0 {
        String::new()
    } else if match_ip.is_empty() {
        format!("NodePort {match_port}")
    } else {
        format!("{match_ip}:{match_port}")
    };
    hosts
        .into_iter()
        .map(|probe| {
            if registry.hello(&probe).is_none() {
                return PlannedCheck::skip(
                    CheckName::NodeFacts,
                    &probe,
                    &to,
                    format!("probe '{probe}' is not connected"),
                );
            }
            PlannedCheck::run(
                CheckName::NodeFacts,
                &probe,
                &to,
                Direction::Local,
                Kind::NodeFacts(pb::NodeFactsTask {
                    match_ip: match_ip.clone(),
                    match_port: u32::from(match_port),
                }),
            )
        })
        .collect()
}

/// Where to capture: the source (its pod's eth0, or the host's primary and
/// tunnel interfaces) and every far-side host with a probe.
fn observers(
    source: &SourceSide,
    target: &Resolved,
    checks: &[PlannedCheck],
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> Vec<String> {
    let mut hosts: Vec<String> = vec![source.probe.clone()];
    hosts.extend(
        checks
            .iter()
            .filter(|c| c.name == CheckName::NodeFacts && c.request.is_some())
            .map(|c| c.from.clone()),
    );
    for e in &target.endpoints {
        if let Some(p) = e
            .node
            .as_deref()
            .and_then(|n| inventory?.node(n)?.probe.clone())
        {
            hosts.push(p);
        }
    }
    let mut on = Vec::new();
    if source.pod.is_some() {
        on.push(format!("{}:eth0", source.spec));
    }
    let mut seen = BTreeSet::new();
    for host in hosts {
        if !seen.insert(host.clone()) {
            continue;
        }
        let Some(hello) = registry.hello(&host) else {
            continue;
        };
        if let Some(primary) = resolve::primary_interface(&host, &hello.interfaces, inventory) {
            on.push(format!("{host}:{primary}"));
        }
        on.extend(
            hello
                .interfaces
                .iter()
                .filter(|i| i.up && TUNNEL_PREFIXES.iter().any(|t| i.name.starts_with(t)))
                .map(|i| format!("{host}:{}", i.name)),
        );
    }
    on
}

/// Everything the checks send and what answers them, and the overlay
/// between nodes; never the coordinator's own streams.
fn capture_filter(
    source: &SourceSide,
    target: &Resolved,
    inventory: Option<&Inventory>,
    coordinator_port: u16,
) -> String {
    let mut hosts: BTreeSet<String> = BTreeSet::new();
    hosts.extend(source.address.map(|a| a.to_string()));
    for e in &target.endpoints {
        if let Some(ip) = e.ip() {
            hosts.insert(ip.to_string());
        }
        if let Some(n) = e.node.as_deref().and_then(|n| inventory?.node(n)) {
            hosts.insert(n.internal_ip.to_string());
        }
    }
    let mut terms: Vec<String> = hosts.into_iter().map(|h| format!("host {h}")).collect();
    terms.extend(
        [
            "icmp",
            "port 53",
            "udp port 8472",
            "udp port 4789",
            "ip proto 4",
        ]
        .iter()
        .map(|t| (*t).to_owned()),
    );
    let wanted = format!("({})", terms.join(" or "));
    if coordinator_port == 0 {
        wanted
    } else {
        format!("{wanted} and not port {coordinator_port}")
    }
}

/// The second wave, decided from the first: the path where reachability
/// failed or lost packets, the path MTU where large packets or a transfer
/// failed while small ones passed.
pub fn follow_ups(plan: &ProbePlan, done: &[pb::Check]) -> Vec<PlannedCheck> {
    let from = plan.source.spec.as_str();
    let failed = |name: CheckName, to: &str| {
        done.iter().any(|c| {
            c.name == name.as_str()
                && c.direction == Direction::Forward.as_str()
                && c.from == from
                && c.status == "fail"
                && c.to.starts_with(to)
        })
    };
    let lossy = |to: &str| {
        done.iter().any(|c| {
            c.name == CheckName::Icmp.as_str()
                && c.status != "skipped"
                && c.to == to
                && c.received < c.sent
        })
    };
    let timeout_us = micros(plan.options.timeout);
    let mut out = Vec::new();
    let mut traced = BTreeSet::new();
    for e in &plan.target.endpoints {
        // A ClusterIP exists only in NAT rules: no hop of a trace leads to it.
        if reachable_from(&plan.source, e).is_err() || e.ip().is_none() || e.role == Role::ClusterIp
        {
            continue;
        }
        let host = e.host.as_str();
        let unreachable = failed(CheckName::Icmp, host) || failed(CheckName::TcpConnect, host);
        if (unreachable || lossy(host)) && traced.len() < 2 && traced.insert(host.to_owned()) {
            out.push(
                PlannedCheck::run(
                    CheckName::Path,
                    from,
                    host,
                    Direction::Forward,
                    Kind::Trace(pb::TraceTask {
                        target: host.to_owned(),
                        mode: pb::trace_task::Mode::Icmp.into(),
                        port: 0,
                        count: 10,
                        max_hops: 16,
                        interval_us: micros(Duration::from_millis(100)),
                        timeout_us: micros(plan.options.timeout.min(Duration::from_millis(500))),
                    }),
                )
                .noted("something failed or lost packets: where does it stop?"),
            );
        }
        let large_failed = failed(CheckName::IcmpLarge, host)
            || done.iter().any(|c| {
                c.name == CheckName::TcpTransfer.as_str()
                    && c.status == "fail"
                    && c.to.starts_with(host)
                    && transfer_of(c).is_some_and(|t| t.connected)
            });
        let small_ok = done
            .iter()
            .any(|c| c.name == CheckName::Icmp.as_str() && c.to == host && c.status == "ok");
        if large_failed && small_ok {
            out.push(
                PlannedCheck::run(
                    CheckName::Pmtu,
                    from,
                    host,
                    Direction::Forward,
                    Kind::Pmtu(pb::PmtuTask {
                        target: host.to_owned(),
                        max_mtu: 0,
                        timeout_us: timeout_us.min(micros(Duration::from_millis(300))),
                        attempts: 2,
                    }),
                )
                .noted("small packets pass, large ones do not: find the path MTU"),
            );
        }
    }
    out
}

/// The transfer result a check carries, if it is one.
pub fn transfer_of(c: &pb::Check) -> Option<&pb::TcpTransferResult> {
    match c.result.as_ref()?.outcome.as_ref()? {
        pb::task_result::Outcome::TcpTransfer(t) => Some(t),
        _ => None,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::testing::lab_inventory;

    fn lab_plan(from: &str, to: &str, size: u32) -> ProbePlan {
        let reg = crate::registry::attached(&["node-1", "node-2", "node-3", "cloudvm-1"]);
        plan(
            from,
            &pb::ProbeRequest {
                to: to.into(),
                size,
                ..Default::default()
            },
            &reg,
            Some(&lab_inventory()),
            PayloadPolicy::default(),
            7443,
        )
        .unwrap()
    }

    fn names(p: &ProbePlan) -> Vec<(String, String, String, bool)> {
        p.checks
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.from.clone(),
                    c.to.clone(),
                    c.request.is_some(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn nodeport_from_outside_tests_every_node_both_ways_and_skips_pods() {
        let p = lab_plan("cloudvm-1", "nodeport:30080", 1472);
        let checks = names(&p);
        for node in ["198.18.0.11", "198.18.0.12", "198.18.0.13"] {
            for name in ["icmp", "icmp_large"] {
                assert!(
                    checks.contains(&(name.into(), "cloudvm-1".into(), node.into(), true)),
                    "{name} {node}: {checks:?}"
                );
            }
            assert!(checks.contains(&(
                "tcp_connect".into(),
                "cloudvm-1".into(),
                format!("{node}:30080"),
                true
            )));
        }
        // Back from every node to cloudvm-1 (198.18.0.14 in the test registry).
        for node in ["node-1", "node-2", "node-3"] {
            assert!(checks.contains(&("icmp".into(), node.into(), "198.18.0.14".into(), true)));
        }
        // The backend pod is not routable from outside: skipped, with why.
        let pod = p
            .checks
            .iter()
            .find(|c| c.to.starts_with("198.19.2.10"))
            .unwrap();
        assert!(pod.request.is_none() && pod.note.contains("inside the cluster"));
        let capture = p.capture.unwrap();
        let probes: Vec<&str> = capture.observers.iter().map(|o| o.probe.as_str()).collect();
        assert_eq!(probes, ["cloudvm-1", "node-1", "node-2", "node-3"]);
        assert!(capture.template.filter_expr.contains("not port 7443"));
        assert!(capture.template.filter_expr.contains("host 198.18.0.12"));
    }

    #[tokio::test]
    async fn service_from_a_node_pings_backends_and_checks_listeners_and_nat() {
        let p = lab_plan("node-3", "svc:default/web:80", 0);
        let by_name = |n: CheckName| p.checks.iter().filter(move |c| c.name == n);
        let icmp: Vec<_> = by_name(CheckName::Icmp).collect();
        assert!(
            icmp.iter()
                .any(|c| c.to == "198.18.200.80" && c.request.is_none())
        );
        assert!(
            icmp.iter()
                .any(|c| c.to == "198.19.2.10" && c.request.is_some())
        );
        assert!(
            icmp.iter()
                .any(|c| c.to == "198.18.0.12" && c.note.contains("node to node")),
            "{icmp:?}"
        );
        assert!(by_name(CheckName::IcmpLarge).next().is_none());
        let listener = by_name(CheckName::Listener).next().unwrap();
        assert_eq!(listener.from, "node-2@pod:default/web-0");
        let facts: Vec<_> = by_name(CheckName::NodeFacts)
            .map(|c| c.from.as_str())
            .collect();
        assert_eq!(facts, ["node-3", "node-2"]);
        let Some(Kind::NodeFacts(f)) = by_name(CheckName::NodeFacts)
            .next()
            .and_then(|c| c.request.as_ref()?.kind.clone())
        else {
            panic!("node facts request")
        };
        assert_eq!((f.match_ip.as_str(), f.match_port), ("198.18.200.80", 80));
    }

    #[tokio::test]
    async fn names_from_a_pod_ask_cluster_dns_and_the_upstream() {
        let p = lab_plan(
            "node-3@pod:default/client-3",
            "dns:web.default.svc.cluster.local",
            0,
        );
        let dns: Vec<_> = p
            .checks
            .iter()
            .filter(|c| c.name == CheckName::Dns)
            .collect();
        assert_eq!(dns.len(), 2);
        assert_eq!(dns[0].from, "node-3@pod:default/client-3");
        let Some(Kind::Dns(d)) = dns[0].request.as_ref().and_then(|r| r.kind.clone()) else {
            panic!("dns request")
        };
        assert_eq!(d.servers, ["198.18.200.10", "198.19.1.53"]);
        assert!(d.compare);
        assert_eq!(dns[1].from, "node-3");
        assert_eq!(
            p.source.address.map(|a| a.to_string()).as_deref(),
            Some("198.19.3.10")
        );
        let on = &p.capture.unwrap().observers;
        assert!(
            on.iter().any(|o| o.netns.is_some()),
            "the pod's eth0 is observed"
        );
    }

    #[tokio::test]
    async fn bad_options_are_refused() {
        let reg = crate::registry::attached(&["node-1"]);
        for (req, says) in [
            (
                pb::ProbeRequest {
                    to: "198.18.0.12".into(),
                    size: 70_000,
                    ..Default::default()
                },
                "--size",
            ),
            (
                pb::ProbeRequest {
                    to: "198.18.0.12".into(),
                    timeout_us: 1,
                    ..Default::default()
                },
                "--timeout",
            ),
            (pb::ProbeRequest::default(), "--to"),
        ] {
            let err = plan("node-1", &req, &reg, None, PayloadPolicy::default(), 0)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
        let err = plan(
            "node-9",
            &pb::ProbeRequest {
                to: "198.18.0.12".into(),
                ..Default::default()
            },
            &reg,
            None,
            PayloadPolicy::default(),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("node-9"), "{err}");
    }

    fn check(name: CheckName, to: &str, status: &str) -> pb::Check {
        pb::Check {
            name: name.as_str().into(),
            from: "cloudvm-1".into(),
            to: to.into(),
            status: status.into(),
            direction: "forward".into(),
            sent: 5,
            received: if status == "ok" { 5 } else { 0 },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn follow_ups_trace_failures_and_search_the_mtu_only_when_small_passes() {
        let p = lab_plan("cloudvm-1", "nodeport:node-2:30080", 1472);
        assert!(follow_ups(&p, &[check(CheckName::Icmp, "198.18.0.12", "ok")]).is_empty());
        let mtu = follow_ups(
            &p,
            &[
                check(CheckName::Icmp, "198.18.0.12", "ok"),
                check(CheckName::IcmpLarge, "198.18.0.12", "fail"),
            ],
        );
        assert_eq!(
            mtu.iter().map(|c| c.name).collect::<Vec<_>>(),
            [CheckName::Pmtu]
        );
        let down = follow_ups(&p, &[check(CheckName::Icmp, "198.18.0.12", "fail")]);
        assert_eq!(
            down.iter().map(|c| c.name).collect::<Vec<_>>(),
            [CheckName::Path]
        );
    }
}
