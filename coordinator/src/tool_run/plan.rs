//! Plans one tool run: where it runs, what it is aimed at, how long it may
//! take, and whether the target probe must first start its responder.
//!
//! Pure over the registry and inventory; it dispatches nothing:
//! [`super::run_plan`] executes the plans it returns.

use std::time::Duration;

use probemesh_model::inventory::Inventory;
use probemesh_model::target::{Port, Target};
use probemesh_proto::pb;
use probemesh_proto::pb::run_request::Kind;

use crate::error::Error;
use crate::registry::Registry;
use crate::resolve::{self, Aim, Source};

/// Slack added to a task's own bound before the coordinator gives up on it.
const TASK_SLACK: Duration = Duration::from_secs(5);
/// Bound of tasks that only read local state.
const READ_BOUND: Duration = Duration::from_secs(20);

/// Which responder socket a task needs on its target probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponderPort {
    /// The TCP sink.
    Tcp,
    /// The UDP echo.
    Udp,
}

/// A probe whose responder must be running before the task starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderNeed {
    /// The target probe.
    pub probe: String,
    /// Which of its ports the task uses.
    pub port: ResponderPort,
}

/// What a tool run will do.
#[derive(Debug, Clone)]
pub struct ToolPlan {
    /// Where the task runs.
    pub source: Source,
    /// The task, aimed.
    pub kind: pb::task::Kind,
    /// How long the probe may take before the run is abandoned.
    pub bound: Duration,
    /// The responder to start first, if the target is a probe without a port.
    pub responder: Option<ResponderNeed>,
}

impl ToolPlan {
    /// Points the task at the responder's port once it is known.
    pub fn set_responder_port(&mut self, port: u32) {
        match &mut self.kind {
            pb::task::Kind::TcpTransfer(t) => {
                t.port = port;
                t.responder = true;
            }
            pb::task::Kind::UdpEcho(u) => u.port = port,
            _ => {}
        }
    }
}

/// Plans `request`.
pub fn plan(
    request: &pb::RunRequest,
    registry: &Registry,
    inventory: Option<&Inventory>,
) -> Result<ToolPlan, Error> {
    let source = resolve::source(&request.from, inventory)?;
    if registry.hello(&source.probe).is_none() {
        return Err(Error::UnknownProbe(source.probe));
    }
    let aim = |spec: &str| resolve::aim(spec, registry, inventory);
    let mut responder = None;
    let (kind, bound) = match request.kind.clone() {
        Some(Kind::Ping(p)) => {
            let a = aim(&p.target)?;
            let named_port = match p.target.parse::<Target>() {
                Ok(Target::NodePort { .. }) | Err(_) => None,
                Ok(target) => target.port(),
            };
            if let Some(port) = named_port {
                return Err(Error::InvalidRequest(format!(
                    "ping sends ICMP echoes, which have no port, but '{}' names port {port}: \
                     to test the port, use `meshctl tcping --from {} {}`",
                    p.target, request.from, p.target
                )));
            }
            let bound = attempts_bound(p.count, p.interval_us, p.timeout_us);
            (
                pb::task::Kind::Ping(pb::PingTask {
                    target: a.host,
                    ..p
                }),
                bound,
            )
        }
        Some(Kind::Tcping(t)) => {
            let spec = with_port(&t.host, t.port);
            let a = aim(&spec)?;
            let port = require_port(&a, &spec, "tcping HOST:PORT")?;
            let bound = attempts_bound(t.count, t.interval_us, t.timeout_us);
            (
                pb::task::Kind::Tcping(pb::TcpingTask {
                    host: a.host,
                    port,
                    ..t
                }),
                bound,
            )
        }
        Some(Kind::TcpTransfer(t)) => {
            let spec = with_port(&t.host, t.port);
            let a = aim(&spec)?;
            let port = responder_or_port(&a, &spec, ResponderPort::Tcp, &mut responder)?;
            let bound = or_default(t.timeout_us, Duration::from_secs(5)) + TASK_SLACK;
            (
                pb::task::Kind::TcpTransfer(pb::TcpTransferTask {
                    host: a.host,
                    port,
                    ..t
                }),
                bound,
            )
        }
        Some(Kind::UdpEcho(u)) => {
            let spec = with_port(&u.host, u.port);
            let a = aim(&spec)?;
            let port = responder_or_port(&a, &spec, ResponderPort::Udp, &mut responder)?;
            let bound = attempts_bound(u.count, u.interval_us, u.timeout_us);
            (
                pb::task::Kind::UdpEcho(pb::UdpEchoTask {
                    host: a.host,
                    port,
                    ..u
                }),
                bound,
            )
        }
        Some(Kind::Pmtu(p)) => {
            let a = aim(&p.target)?;
            // A binary search over 68..=65535 takes at most 16 sizes.
            let per_size =
                or_default(p.timeout_us, Duration::from_secs(1)) * p.attempts.clamp(2, 10);
            (
                pb::task::Kind::Pmtu(pb::PmtuTask {
                    target: a.host,
                    ..p
                }),
                per_size * 17 + TASK_SLACK,
            )
        }
        Some(Kind::Trace(t)) => {
            let a = aim(&t.target)?;
            let rounds = if t.count == 0 { 10 } else { t.count.min(100) };
            let per_round = or_default(t.interval_us, Duration::from_secs(1))
                .max(or_default(t.timeout_us, Duration::from_secs(1)));
            (
                pb::task::Kind::Trace(pb::TraceTask {
                    target: a.host,
                    ..t
                }),
                per_round * (rounds + 2) + TASK_SLACK,
            )
        }
        Some(Kind::Dns(d)) => {
            if d.name.trim().is_empty() {
                return Err(Error::InvalidRequest("dig needs a NAME to resolve".into()));
            }
            let queries = u32::try_from(d.servers.len())
                .unwrap_or(u32::MAX)
                .saturating_add(4);
            let bound = or_default(d.timeout_us, Duration::from_secs(2)) * queries * 2 + TASK_SLACK;
            (pb::task::Kind::Dns(d), bound)
        }
        Some(Kind::Listener(l)) => (pb::task::Kind::Listener(l), READ_BOUND),
        Some(Kind::NodeFacts(n)) => (pb::task::Kind::NodeFacts(n), READ_BOUND),
        Some(Kind::Capture(_)) => {
            return Err(Error::InvalidRequest(
                "a capture has several observers: it is planned by capture::plan".into(),
            ));
        }
        Some(Kind::Probe(_)) => {
            return Err(Error::InvalidRequest(
                "a probe run has many checks: it is planned by diagnose::plan".into(),
            ));
        }
        Some(Kind::Mesh(_)) => {
            return Err(Error::InvalidRequest(
                "a mesh run has many cells: it is planned by matrix::plan".into(),
            ));
        }
        None => {
            return Err(Error::InvalidRequest(
                "the run request names no test".into(),
            ));
        }
    };
    Ok(ToolPlan {
        source,
        kind,
        bound,
        responder,
    })
}

fn with_port(host: &str, port: u32) -> String {
    if port == 0 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

fn require_port(aim: &Aim, spec: &str, usage: &str) -> Result<u32, Error> {
    aim.port
        .map(|p| u32::from(p.get()))
        .ok_or_else(|| Error::InvalidRequest(format!("'{spec}' needs a port: {usage}")))
}

/// The given port, or — for a `probe:NAME` target without one — the
/// target probe's responder, started for this run.
fn responder_or_port(
    aim: &Aim,
    spec: &str,
    which: ResponderPort,
    responder: &mut Option<ResponderNeed>,
) -> Result<u32, Error> {
    match (aim.port, &aim.probe) {
        (Some(p), _) => Ok(u32::from(Port::get(p))),
        (None, Some(probe)) => {
            *responder = Some(ResponderNeed {
                probe: probe.clone(),
                port: which,
            });
            Ok(0)
        }
        (None, None) => Err(Error::InvalidRequest(format!(
            "'{spec}' needs a port, or a probe:NAME target whose responder the run will start"
        ))),
    }
}

/// Upper bound of `count` attempts spaced by `interval`, each waiting up to `timeout`.
fn attempts_bound(count: u32, interval_us: u64, timeout_us: u64) -> Duration {
    let per = or_default(interval_us, Duration::from_secs(1))
        .max(or_default(timeout_us, Duration::from_secs(1)));
    per.saturating_mul(count.max(1)) + TASK_SLACK
}

fn or_default(us: u64, default: Duration) -> Duration {
    if us == 0 {
        default
    } else {
        Duration::from_micros(us).min(Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(from: &str, kind: Kind) -> pb::RunRequest {
        pb::RunRequest {
            from: from.into(),
            kind: Some(kind),
        }
    }

    #[tokio::test]
    async fn transfer_to_a_probe_without_port_starts_its_responder() {
        let reg = crate::registry::attached(&["node-1", "node-2"]);
        let req = request(
            "node-1",
            Kind::TcpTransfer(pb::TcpTransferTask {
                host: "probe:node-2".into(),
                ..Default::default()
            }),
        );
        let mut plan = plan(&req, &reg, None).unwrap();
        assert_eq!(
            plan.responder,
            Some(ResponderNeed {
                probe: "node-2".into(),
                port: ResponderPort::Tcp
            })
        );
        plan.set_responder_port(40000);
        let pb::task::Kind::TcpTransfer(t) = &plan.kind else {
            panic!("kind")
        };
        assert_eq!(
            (t.host.as_str(), t.port, t.responder),
            ("198.18.0.12", 40000, true)
        );
    }

    #[tokio::test]
    async fn ports_are_required_where_no_responder_can_help() {
        let reg = crate::registry::attached(&["node-1"]);
        for kind in [
            Kind::Tcping(pb::TcpingTask {
                host: "198.18.0.12".into(),
                ..Default::default()
            }),
            Kind::TcpTransfer(pb::TcpTransferTask {
                host: "198.18.0.12".into(),
                ..Default::default()
            }),
            Kind::UdpEcho(pb::UdpEchoTask {
                host: "198.18.0.12".into(),
                ..Default::default()
            }),
        ] {
            let err = plan(&request("node-1", kind), &reg, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("needs a port"), "{err}");
        }
    }

    #[tokio::test]
    async fn unknown_source_and_empty_kind_are_refused() {
        let reg = crate::registry::attached(&["node-1"]);
        let err = plan(
            &request("node-9", Kind::Listener(pb::ListenerTask::default())),
            &reg,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("node-9"));
        let err = plan(
            &pb::RunRequest {
                from: "node-1".into(),
                kind: None,
            },
            &reg,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("names no test"));
    }

    #[tokio::test]
    async fn bounds_grow_with_the_work_asked() {
        let reg = crate::registry::attached(&["node-1"]);
        let ping = |count| {
            plan(
                &request(
                    "node-1",
                    Kind::Ping(pb::PingTask {
                        target: "198.18.0.1".into(),
                        count,
                        ..Default::default()
                    }),
                ),
                &reg,
                None,
            )
            .unwrap()
            .bound
        };
        assert!(ping(100) > ping(3));
        assert_eq!(ping(3), Duration::from_secs(3) + TASK_SLACK);
    }
}
