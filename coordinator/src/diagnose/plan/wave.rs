//! The first wave of a plan: the checks that always run (both directions),
//! the DNS and node-facts checks, the observers and their capture filter.
//! Not the follow-ups (see [`super::follow_ups`]).

use super::*;
use crate::diagnose::timing::{TRANSFER_TIMEOUT, pace_wait};

/// The checks that always run.
pub(super) fn first_wave(
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
            ..Default::default()
        })
    };
    if let Some(name) = &target.name {
        checks.extend(dns_checks(source, name, o, inventory));
    }
    let mut reverse_from: BTreeSet<String> = BTreeSet::new();
    let mut underlay: BTreeSet<String> = BTreeSet::new();
    for e in &target.endpoints {
        // What listens, inside the pod: asked there, so it is planned
        // even where the source cannot reach the pod itself.
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
            checks.push(
                PlannedCheck::run(
                    CheckName::Icmp,
                    from,
                    &e.host,
                    Direction::Forward,
                    ping(&e.host, SMALL_SIZE, o.count),
                )
                .measures(&e.host),
            );
            if let Some(size) = o.size {
                checks.push(
                    PlannedCheck::run(
                        CheckName::IcmpLarge,
                        from,
                        &e.host,
                        Direction::Forward,
                        ping(&e.host, size, LARGE_COUNT),
                    )
                    .paced_by(e),
                );
            }
        }
        // The echoes above measure the path the port checks wait on; a
        // ClusterIP answers no echo, its traffic goes on to its backends,
        // and their echoes measure it (the slowest of them).
        let pace = |c: PlannedCheck| match e.role {
            Role::ClusterIp => target
                .endpoints
                .iter()
                .filter(|b| b.role == Role::Backend && reachable_from(source, b).is_ok())
                .fold(c, PlannedCheck::paced_by),
            _ => c.paced_by(e),
        };
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
                checks.push(pace(PlannedCheck::run(
                    CheckName::TcpConnect,
                    from,
                    &to,
                    Direction::Forward,
                    connect,
                )));
                checks.push(pace(PlannedCheck::run(
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
                )));
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
            // The same path the other way, so the same round trip: it
            // measures the endpoint and paces the forward echoes there (a
            // host that drops echoes to it still answers its own).
            checks.push(
                PlannedCheck::run(
                    CheckName::Icmp,
                    back,
                    &to,
                    Direction::Reverse,
                    ping(&to, SMALL_SIZE, o.count),
                )
                .measures(&e.host),
            );
            if let Some(forward) = checks.iter_mut().find(|c| {
                c.name == CheckName::Icmp && c.direction == Direction::Forward && c.to == e.host
            }) {
                forward.paced_by = vec![Pace::of(e)];
            }
            if let Some(size) = o.size {
                checks.push(
                    PlannedCheck::run(
                        CheckName::IcmpLarge,
                        back,
                        &to,
                        Direction::Reverse,
                        ping(&to, size, LARGE_COUNT),
                    )
                    .paced_by(e),
                );
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
    }
    let window = counter_window(&checks, registry);
    checks.extend(facts_checks(source, target, registry, inventory, window));
    checks
}

/// How long node facts watch the DROP/REJECT counters: until the last
/// packet of `checks` is due to leave, plus [`COUNTER_SLACK`] and two clock
/// round trips of the slowest probe. A rule's counter moves when a packet
/// meets it, not when the check sending it gives up waiting, so the window
/// covers the sends: every echo and connect at its interval, after the
/// pace wait of a paced check (the longest it can wait for its endpoint's
/// first reply, [`pace_wait`]). That is the slowest case: the diagnosis
/// ends the window sooner, [`counter_settle`] after the checks have ended.
pub(super) fn counter_window(checks: &[PlannedCheck], registry: &Registry) -> Duration {
    let spaced = |count: u32, interval_us: u64| {
        Duration::from_micros(interval_us).saturating_mul(count.saturating_sub(1))
    };
    let mut last_send = Duration::ZERO;
    for check in checks {
        let Some(kind) = check.request.as_ref().and_then(|r| r.kind.as_ref()) else {
            continue;
        };
        let rtt = clock_rtt(check, registry);
        let start = if check.paced_by.is_empty() {
            Duration::ZERO
        } else {
            pace_wait(rtt)
        };
        let span = match kind {
            Kind::Ping(p) => spaced(p.count, p.interval_us),
            Kind::Tcping(t) => spaced(t.count, t.interval_us),
            _ => Duration::ZERO,
        };
        last_send = last_send.max(start + span);
    }
    (last_send + counter_settle(checks, registry)).min(MAX_COUNTER_WINDOW)
}

/// How long after its last packet leaves a check's counters have surely
/// moved: [`COUNTER_SLACK`] plus two clock round trips of the slowest probe
/// sending them (the packet's way to the rule, and the probes' reading).
pub fn counter_settle(checks: &[PlannedCheck], registry: &Registry) -> Duration {
    let slowest = checks
        .iter()
        .filter(|c| c.request.is_some())
        .map(|c| clock_rtt(c, registry))
        .max()
        .unwrap_or_default();
    COUNTER_SLACK + slowest * 2
}

/// The clock round trip of the probe `check` runs from (zero unknown).
fn clock_rtt(check: &PlannedCheck, registry: &Registry) -> Duration {
    let probe = check.from.split('@').next().unwrap_or_default();
    registry
        .clock(probe)
        .map_or(Duration::ZERO, |s| s.round_trip())
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
        servers.extend(dns.ready_endpoints().map(|e| e.ip.to_string()));
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
    // Whether the cluster DNS server runs at all: what listens on :53 in
    // each of its pods (down, or up and unreachable).
    if let (Some(inv), Some(dns)) = (inventory, cluster_dns(inventory)) {
        let mut seen = BTreeSet::new();
        for ep in dns.ready_endpoints() {
            if let Some(inside) = super::super::target::pod_probe(inv, &dns.namespace, &ep.pod)
                && seen.insert(inside.clone())
            {
                checks.push(
                    PlannedCheck::run(
                        CheckName::Listener,
                        &inside,
                        ":53",
                        Direction::Local,
                        Kind::Listener(pb::ListenerTask { port: 53 }),
                    )
                    .noted("what listens in the cluster DNS pod"),
                );
            }
        }
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
    counter_window: Duration,
) -> Vec<PlannedCheck> {
    let (match_ip, match_port) = match (&target.service, &target.name) {
        (Some(svc), _) if svc.node_port => (String::new(), svc.port),
        (Some(svc), _) => (svc.cluster_ip.to_string(), svc.port),
        (None, Some(_)) => cluster_dns(inventory)
            .map_or((String::new(), 0), |dns| (dns.cluster_ip.to_string(), 53)),
        (None, None) => (String::new(), 0),
    };
    // The kernel's route, on every host, to each address of the target and
    // back to the source.
    let mut lookups: Vec<String> = Vec::new();
    for ip in target
        .endpoints
        .iter()
        .filter_map(|e| e.ip())
        .chain(source.address)
    {
        let ip = ip.to_string();
        if !lookups.contains(&ip) && lookups.len() < MAX_ROUTE_LOOKUPS {
            lookups.push(ip);
        }
    }
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
                    route_lookups: lookups.clone(),
                    counter_window_us: micros(counter_window),
                }),
            )
        })
        .collect()
}

/// Where to capture: the source (its pod's eth0, or the host's primary and
/// tunnel interfaces), every far-side host with a probe, and the eth0 of
/// every pod the target leads to whose node has one.
pub(super) fn observers(
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
    // The destination's own capture: whether a packet reached the pod, and
    // whether an answer (an RST) left it or was made on the way.
    for e in target.endpoints.iter().filter(|e| e.role.is_pod()) {
        if let Some(p) = e.probe.as_deref().filter(|p| p.contains("@pod:"))
            && p.split_once('@')
                .is_some_and(|(host, _)| registry.hello(host).is_some())
        {
            on.push(format!("{p}:eth0"));
        }
    }
    on
}

/// Everything the checks send and what answers them, and the overlay
/// between nodes; never the coordinator's own streams.
pub(super) fn capture_filter(
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
