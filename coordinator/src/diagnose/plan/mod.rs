//! Plans a `meshctl probe` run the way an engineer works a path: basic
//! reachability (icmp) → the port (tcp_connect) → DNS when a name is
//! involved → large packets (icmp_large at `--size` with DF, tcp_transfer)
//! → node facts and NAT rules on every node involved; then, only when
//! something failed, the path (mtr) and the path MTU ([`follow_ups`]).
//! Checks run in both directions where both ends have probes, and every
//! check that cannot help is kept as `skipped` with the reason.
//!
//! Pure: the registry and inventory in, [`DiagnosisPlan`] out. Each check is an
//! ordinary [`pb::RunRequest`], planned and dispatched like any tool run.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use probemesh_model::check::{CheckName, Direction};
use probemesh_model::inventory::Inventory;
use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;

use super::target::{Endpoint, Resolved, Role};
use crate::capture::{self, plan::CapturePlan};
use crate::error::Error;
use crate::registry::Registry;
use crate::resolve;
use crate::state::PayloadPolicy;

mod follow_ups;
mod wave;

pub use follow_ups::follow_ups;
use wave::{capture_filter, first_wave, observers};
pub use wave::{cluster_dns, counter_settle};

/// Echoes per ICMP check when `--count` is not given: enough that a path
/// losing a fifth of its packets shows it (0.8^20 ≈ 1 % chance of no loss
/// in one direction).
pub const DEFAULT_COUNT: u32 = 20;
/// Gap between echoes.
const ICMP_INTERVAL: Duration = Duration::from_millis(20);
/// Echoes of the large-packet check (a black hole loses them all).
const LARGE_COUNT: u32 = 5;
/// TCP connects per endpoint.
pub const CONNECT_COUNT: u32 = 3;
/// Gap between TCP connects.
const CONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes pushed by tcp_transfer: many full-size segments.
const TRANSFER_BYTES: u64 = 64 * 1024;
/// Default wait per attempt when the run measured nothing to derive it
/// from (see [`super::timing`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// ICMP payload of the plain reachability check (as ping's default).
pub const SMALL_SIZE: u32 = 56;
/// The capture window's upper bound; the run stops it when its checks end.
const CAPTURE_WINDOW: Duration = Duration::from_secs(90);
/// Packets kept per observer (headers only).
const CAPTURE_MAX_PACKETS: u64 = 200_000;
/// How long node facts keep watching the DROP/REJECT counters after the
/// first wave's last packet is due to leave: its way to the node, and the
/// checks reaching their probes a little apart (see [`wave::counter_window`]).
const COUNTER_SLACK: Duration = Duration::from_millis(100);
/// The longest counter window a probe accepts (its own bound).
const MAX_COUNTER_WINDOW: Duration = Duration::from_secs(10);
/// Most route lookups per node facts check (the probe's own bound).
const MAX_ROUTE_LOOKUPS: usize = 16;
/// Interface name prefixes of overlay tunnels (flannel, Calico IPIP and
/// VXLAN, Cilium, Geneve, WireGuard).
const TUNNEL_PREFIXES: [&str; 6] = ["flannel", "tunl", "vxlan", "cilium_vxlan", "genev", "wg"];

/// What the user asked besides the ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// ICMP payload of the large check; `None`: no large check.
    pub size: Option<u32>,
    /// Echoes per ICMP check.
    pub count: u32,
    /// Wait per attempt before anything is measured (the plain echoes).
    pub timeout: Duration,
    /// Whether `--timeout` was given: then every check waits exactly that,
    /// nothing is derived from the measured round trip.
    pub explicit_timeout: bool,
    /// Synchronized captures on every observer.
    pub capture: bool,
}

impl Options {
    /// From the request, with defaults.
    pub fn from_request(req: &pb::DiagnosisRequest) -> Result<Self, Error> {
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
            explicit_timeout: req.timeout_us != 0,
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
    /// The endpoints whose first echo replies set this check's timeouts
    /// ([`super::timing`]); empty: the planned timeouts stand.
    pub paced_by: Vec<Pace>,
    /// The endpoint host whose round trip this check's echo replies
    /// measure (the plain echoes there, or back from its probe).
    pub measures: Option<String>,
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
            paced_by: Vec::new(),
            measures: None,
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
            paced_by: Vec::new(),
            measures: None,
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

    /// Timeouts from `e`'s first echo reply, unless `--timeout` was given.
    fn paced_by(mut self, e: &Endpoint) -> Self {
        self.paced_by.push(Pace::of(e));
        self
    }

    /// Its echo replies measure the round trip to `host`.
    fn measures(mut self, host: &str) -> Self {
        self.measures = Some(host.to_owned());
        self
    }
}

/// An endpoint that paces a check ([`super::timing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pace {
    /// The endpoint host, whose first echo reply measures the path.
    pub host: String,
    /// The probe at that end (its own, or its node's), whose clock
    /// exchange stands in when nothing on the path answers.
    pub probe: Option<String>,
}

impl Pace {
    /// The pace of endpoint `e`.
    pub fn of(e: &Endpoint) -> Self {
        Self {
            host: e.host.clone(),
            probe: e
                .probe
                .as_deref()
                .and_then(|p| p.split('@').next())
                .map(str::to_owned),
        }
    }
}

/// The whole run, before it starts.
#[derive(Debug, Clone)]
pub struct DiagnosisPlan {
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
    req: &pb::DiagnosisRequest,
    registry: &Registry,
    inventory: Option<&Inventory>,
    payload: PayloadPolicy,
    coordinator_port: u16,
) -> Result<DiagnosisPlan, Error> {
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
    Ok(DiagnosisPlan {
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

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
