//! Admission of one run against the [`Rules`]: role and kind, targets,
//! intervals, then the counted limits (rate, runs at once, capture bytes),
//! whose reservation a [`Ticket`] holds until the run ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use probemesh_model::inventory::Inventory;
use probemesh_proto::identity::Identity;
use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;
use tokio::time::Instant;

use super::audit::AuditLog;
use super::{Hostnames, OwnPorts, Rules};
use crate::error::Error;
use crate::registry::Registry;
use crate::resolve;

/// Every run kind a role may be given (`telemetry::request_kind`'s names).
pub const RUN_KINDS: [&str; 12] = [
    "ping",
    "tcping",
    "tcp_transfer",
    "udp_echo",
    "pmtu",
    "trace",
    "dns",
    "listener",
    "node_facts",
    "capture",
    "probe",
    "mesh",
];

/// What a capture reserves on an observer when it sets no `max_bytes`:
/// the probe's own default bound.
const CAPTURE_DEFAULT_BYTES: u64 = 2 << 30;

/// The policy in force, and what runs hold of its limits right now.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Rules,
    own: Option<OwnPorts>,
    counters: Arc<Mutex<Counters>>,
    /// Where every Control call is recorded.
    pub audit: AuditLog,
}

#[derive(Debug, Default)]
struct Counters {
    runs_by_probe: HashMap<String, u32>,
    runs_by_identity: HashMap<String, u32>,
    capture_bytes: HashMap<String, u64>,
    buckets: HashMap<String, Bucket>,
}

/// A token bucket: `tokens` left at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What an admitted run holds; released when dropped (the run ended).
#[derive(Debug)]
pub struct Ticket {
    counters: Arc<Mutex<Counters>>,
    identity: String,
    probes: Vec<String>,
    capture_bytes: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = lock(&self.counters);
        release(&mut c.runs_by_identity, &self.identity, 1);
        for probe in &self.probes {
            release(&mut c.runs_by_probe, probe, 1);
            if self.capture_bytes > 0
                && let Some(held) = c.capture_bytes.get_mut(probe)
            {
                *held = held.saturating_sub(self.capture_bytes);
                if *held == 0 {
                    c.capture_bytes.remove(probe);
                }
            }
        }
    }
}

fn release(map: &mut HashMap<String, u32>, key: &str, n: u32) {
    if let Some(v) = map.get_mut(key) {
        *v = v.saturating_sub(n);
        if *v == 0 {
            map.remove(key);
        }
    }
}

fn lock(m: &Mutex<Counters>) -> MutexGuard<'_, Counters> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A refusal by rule `rule`.
fn denied(rule: &'static str, detail: String) -> Error {
    Error::PolicyDenied { rule, detail }
}

fn exhausted(rule: &'static str, detail: String) -> Error {
    Error::PolicyExhausted { rule, detail }
}

impl Policy {
    /// `rules` in force for a coordinator serving on `own`, recording calls
    /// to `audit`.
    pub fn new(rules: Rules, own: OwnPorts, audit: AuditLog) -> Self {
        Self {
            rules,
            own: Some(own),
            counters: Arc::default(),
            audit,
        }
    }

    /// Admits `request` from `identity` or says which rule refuses it. Cheap
    /// lookups only; the caller holds no lock. The returned ticket must live
    /// as long as the run.
    pub fn admit(
        &self,
        identity: &Identity,
        request: &pb::RunRequest,
        registry: &Registry,
        inventory: Option<&Inventory>,
        now: Instant,
    ) -> Result<Ticket, Error> {
        let kind = crate::telemetry::request_kind(request);
        let role = identity.role.as_str();
        let may = self
            .rules
            .roles
            .get(role)
            .is_some_and(|kinds| kinds.iter().any(|k| k == "*" || k == kind));
        if !may {
            return Err(denied(
                "roles",
                format!(
                    "role {role} may not start {kind} runs; add \"{kind}\" to roles.{role} in the policy file (--policy)"
                ),
            ));
        }
        for (host, port) in aims(request, registry, inventory) {
            self.check_target(&host, port, registry, inventory)?;
        }
        self.check_interval(request)?;
        self.reserve(identity, request, now)
    }

    fn check_target(
        &self,
        host: &str,
        port: Option<u16>,
        registry: &Registry,
        inventory: Option<&Inventory>,
    ) -> Result<(), Error> {
        let Ok(ip) = host.parse::<IpAddr>() else {
            let t = &self.rules.targets;
            let name = host.trim_end_matches('.');
            let allowed = match t.hostnames {
                Hostnames::Any => true,
                Hostnames::ClusterDomain => name.ends_with(&format!(".{}", t.cluster_domain)),
                Hostnames::None => false,
            };
            return if allowed {
                Ok(())
            } else {
                Err(denied(
                    "targets.hostnames",
                    format!(
                        "hostname '{host}' is resolved on the probe, so its address cannot be checked; aim at an address, or set targets.hostnames to \"any\" in the policy file (--policy)"
                    ),
                ))
            };
        };
        if let (Some(own), Some(port)) = (self.own, port) {
            let ours = |addr: std::net::SocketAddr| {
                addr.port() == port
                    && (addr.ip().is_unspecified() || addr.ip() == ip || ip.is_loopback())
            };
            if ours(own.listen) || own.metrics.is_some_and(ours) || own.web.is_some_and(ours) {
                return Err(denied(
                    "targets.deny-coordinator-ports",
                    format!(
                        "{ip} port {port} is this coordinator's own (gRPC, UDP clock, metrics or web view); no policy allows it"
                    ),
                ));
            }
        }
        if known_address(ip, registry, inventory) {
            return Ok(());
        }
        let allowed = self.rules.targets.allow.iter().any(|rule| {
            rule.cidr
                .parse::<ipnet::IpNet>()
                .is_ok_and(|net| net.contains(&ip))
                && (rule.ports.is_empty() || port.is_some_and(|p| rule.ports.contains(&p)))
        });
        if allowed {
            Ok(())
        } else {
            Err(denied(
                "targets.default-deny",
                format!(
                    "{ip} is neither a node, pod or Service of the inventory nor a probe's address; to aim at it, add {{\"cidr\": \"{ip}/{}\"}} to targets.allow in the policy file (--policy)",
                    if ip.is_ipv4() { 32 } else { 128 }
                ),
            ))
        }
    }

    fn check_interval(&self, request: &pb::RunRequest) -> Result<(), Error> {
        let interval_us = match &request.kind {
            Some(Kind::Ping(p)) => p.interval_us,
            Some(Kind::Tcping(t)) => t.interval_us,
            Some(Kind::UdpEcho(u)) => u.interval_us,
            Some(Kind::Trace(t)) => t.interval_us,
            _ => 0,
        };
        let min_us = self.rules.limits.min_interval_ms.saturating_mul(1000);
        // 0 asks for the tool's default (1 s).
        if interval_us != 0 && interval_us < min_us {
            return Err(denied(
                "limits.min-interval",
                format!(
                    "interval {interval_us} µs is below the minimum of {} ms; ask for a longer interval, or lower limits.min_interval_ms in the policy file (--policy)",
                    self.rules.limits.min_interval_ms
                ),
            ));
        }
        Ok(())
    }

    fn reserve(
        &self,
        identity: &Identity,
        request: &pb::RunRequest,
        now: Instant,
    ) -> Result<Ticket, Error> {
        let limits = &self.rules.limits;
        let probes = probes_of(request);
        let capture_bytes = match &request.kind {
            Some(Kind::Capture(c)) if c.max_bytes > 0 => c.max_bytes,
            Some(Kind::Capture(_)) => CAPTURE_DEFAULT_BYTES,
            _ => 0,
        };
        let who = identity.name.clone();
        let mut c = lock(&self.counters);
        let running = c.runs_by_identity.get(&who).copied().unwrap_or(0);
        if running >= limits.max_runs_per_identity {
            return Err(exhausted(
                "limits.max-runs-per-identity",
                format!(
                    "'{who}' already has {running} runs in flight (limit {}); wait for one to finish",
                    limits.max_runs_per_identity
                ),
            ));
        }
        for probe in &probes {
            let on = c.runs_by_probe.get(probe).copied().unwrap_or(0);
            if on >= limits.max_runs_per_probe {
                return Err(exhausted(
                    "limits.max-runs-per-probe",
                    format!(
                        "probe '{probe}' already runs {on} runs (limit {}); wait for one to finish",
                        limits.max_runs_per_probe
                    ),
                ));
            }
            let held = c.capture_bytes.get(probe).copied().unwrap_or(0);
            if capture_bytes > 0
                && held.saturating_add(capture_bytes) > limits.capture_bytes_per_probe
            {
                return Err(exhausted(
                    "limits.capture-bytes-per-probe",
                    format!(
                        "probe '{probe}' has {held} capture bytes reserved; {capture_bytes} more would pass {}: set a smaller --max-bytes or wait for a capture to end",
                        limits.capture_bytes_per_probe
                    ),
                ));
            }
        }
        let burst = f64::from(limits.rate_burst);
        let bucket = c.buckets.entry(who.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill =
            now.saturating_duration_since(bucket.at).as_secs_f64() * limits.rate_per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(exhausted(
                "limits.rate",
                format!(
                    "'{who}' started more than {} runs in a burst; it may start {} a second: retry in {:.1} s",
                    limits.rate_burst,
                    limits.rate_per_second,
                    (1.0 - bucket.tokens) / limits.rate_per_second
                ),
            ));
        }
        bucket.tokens -= 1.0;
        *c.runs_by_identity.entry(who.clone()).or_default() += 1;
        for probe in &probes {
            *c.runs_by_probe.entry(probe.clone()).or_default() += 1;
            if capture_bytes > 0 {
                *c.capture_bytes.entry(probe.clone()).or_default() += capture_bytes;
            }
        }
        drop(c);
        Ok(Ticket {
            counters: self.counters.clone(),
            identity: who,
            probes,
            capture_bytes,
        })
    }
}

/// Whether `ip` is a node, pod or Service of the inventory or one of the
/// registered probes' interface addresses.
fn known_address(ip: IpAddr, registry: &Registry, inventory: Option<&Inventory>) -> bool {
    let in_inventory = inventory.is_some_and(|inv| {
        inv.nodes.iter().any(|n| n.internal_ip == ip)
            || inv.pods.iter().any(|p| p.ip == ip)
            || inv.services.iter().any(|s| s.cluster_ip == ip)
    });
    in_inventory || registry.has_interface_address(ip)
}

/// The hosts and ports `request` aims traffic at, resolved as the planner
/// resolves them. A spec that does not resolve is left to the planner,
/// which refuses it with its own reason.
fn aims(
    request: &pb::RunRequest,
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> Vec<(String, Option<u16>)> {
    let spec = |host: &str, port: u32| {
        if port == 0 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        }
    };
    if let Some(Kind::Dns(d)) = &request.kind {
        // Servers are IP[:PORT]; a name server elsewhere is refused by the probe.
        return d
            .servers
            .iter()
            .filter_map(|s| {
                s.parse::<std::net::SocketAddr>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(|ip| (ip, 53).into()))
            })
            .map(|a| (a.ip().to_string(), Some(a.port())))
            .collect();
    }
    let specs: Vec<String> = match &request.kind {
        Some(Kind::Ping(p)) => vec![p.target.clone()],
        Some(Kind::Tcping(t)) => vec![spec(&t.host, t.port)],
        Some(Kind::TcpTransfer(t)) => vec![spec(&t.host, t.port)],
        Some(Kind::UdpEcho(u)) => vec![spec(&u.host, u.port)],
        Some(Kind::Pmtu(p)) => vec![p.target.clone()],
        Some(Kind::Trace(t)) => vec![spec(&t.target, t.port)],
        Some(Kind::Probe(p)) => vec![p.to.clone()],
        _ => Vec::new(),
    };
    specs
        .iter()
        .filter_map(|s| resolve::aim(s, registry, inventory).ok())
        .map(|a| (a.host, a.port.map(|p| p.get())))
        .collect()
}

/// The probes a run occupies: its source, or each capture observer.
fn probes_of(request: &pb::RunRequest) -> Vec<String> {
    let probe = |spec: &str| {
        spec.split(['@', ':'])
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut probes: Vec<String> = match &request.kind {
        Some(Kind::Capture(c)) => c.on.iter().map(|s| probe(s)).collect(),
        _ => vec![probe(&request.from)],
    };
    probes.retain(|p| !p.is_empty());
    probes.sort();
    probes.dedup();
    probes
}
