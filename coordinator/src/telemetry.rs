//! The coordinator's spans: one trace per run.
//!
//! `probemesh.run` is the root (fields `run_id`, `trace_id`, `requester`,
//! `from`, `target`, `kind`, `probe`); its children are the phases
//! `probemesh.plan`, `probemesh.responder`, `probemesh.dispatch`,
//! `probemesh.await` and `probemesh.store`. Each task sent to a probe
//! carries the W3C context of the span that sent it, so the probe's
//! `probe.task` span joins the same trace. The fields ride along on every
//! log line inside the run (JSON output lists the enclosing spans' fields).

use std::collections::HashMap;

use probemesh_proto::pb;
use probemesh_telemetry::{inject, trace_id};
use tracing::Span;
use tracing::field::Empty;

/// Opens the root span of run `run_id` and returns it with its trace id
/// (32 hex digits; random when telemetry is not installed, as in unit tests).
pub fn run_span(run_id: &str, requester: &str, request: &pb::RunRequest) -> (Span, String) {
    let span = tracing::info_span!(
        parent: None,
        "probemesh.run",
        run_id = %run_id,
        trace_id = Empty,
        requester = %requester,
        from = %request.from,
        target = %request_target(request),
        kind = request_kind(request),
        probe = Empty,
    );
    let id = trace_id(&span).unwrap_or_else(random_trace_id);
    span.record("trace_id", id.as_str());
    (span, id)
}

/// The W3C trace context to send with a task dispatched under `span`.
pub fn task_context(span: &Span) -> HashMap<String, String> {
    inject(span)
}

/// The task kind a request asks for (`ping`, `tcp_transfer`, ...), or
/// `none` when it names none.
pub fn request_kind(request: &pb::RunRequest) -> &'static str {
    use pb::run_request::Kind;
    match &request.kind {
        Some(Kind::Ping(_)) => "ping",
        Some(Kind::Tcping(_)) => "tcping",
        Some(Kind::TcpTransfer(_)) => "tcp_transfer",
        Some(Kind::UdpEcho(_)) => "udp_echo",
        Some(Kind::Pmtu(_)) => "pmtu",
        Some(Kind::Trace(_)) => "trace",
        Some(Kind::Dns(_)) => "dns",
        Some(Kind::Listener(_)) => "listener",
        Some(Kind::NodeFacts(_)) => "node_facts",
        Some(Kind::Capture(_)) => "capture",
        Some(Kind::Probe(_)) => "probe",
        Some(Kind::Mesh(_)) => "mesh",
        None => "none",
    }
}

/// The target as the user wrote it (`probe:node-b`, `10.0.0.1`, `:8080`).
pub fn request_target(request: &pb::RunRequest) -> String {
    use pb::run_request::Kind;
    let host_port = |host: &str, port: u32| match port {
        0 => host.to_owned(),
        p => format!("{host}:{p}"),
    };
    match &request.kind {
        Some(Kind::Ping(t)) => t.target.clone(),
        Some(Kind::Tcping(t)) => host_port(&t.host, t.port),
        Some(Kind::TcpTransfer(t)) => host_port(&t.host, t.port),
        Some(Kind::UdpEcho(t)) => host_port(&t.host, t.port),
        Some(Kind::Pmtu(t)) => t.target.clone(),
        Some(Kind::Trace(t)) => t.target.clone(),
        Some(Kind::Dns(t)) => t.name.clone(),
        Some(Kind::Listener(t)) => format!(":{}", t.port),
        Some(Kind::NodeFacts(t)) => host_port(&t.match_ip, t.match_port),
        Some(Kind::Capture(c)) => c.on.join(","),
        Some(Kind::Probe(p)) => p.to.clone(),
        Some(Kind::Mesh(m)) => m.to.clone(),
        None => String::new(),
    }
}

fn random_trace_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_telemetry_the_trace_id_is_still_32_hex() {
        let request = pb::RunRequest {
            from: "node-a".into(),
            kind: Some(pb::run_request::Kind::Tcping(pb::TcpingTask {
                host: "10.0.0.1".into(),
                port: 80,
                ..Default::default()
            })),
        };
        let (_span, id) = run_span("abcd", "admin", &request);
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(request_target(&request), "10.0.0.1:80");
        assert_eq!(request_kind(&request), "tcping");
    }
}
