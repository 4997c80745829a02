//! `mesh-coordinator`: see the crate docs of `mesh_coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_coordinator::server::{Bound, Settings};
use mesh_coordinator::state::LinkTiming;
use probemesh_telemetry::{Telemetry, TelemetryConfig, host_name};

/// The probemesh coordinator: registers probes over mTLS, plans and runs
/// tests on them, and stores the results.
///
/// Every probe and every meshctl must present a certificate issued by the CA
/// in --tls-dir (create it with `meshctl certs init`).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, env = "MESH_LISTEN", default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// Directory with ca.pem, ca-key.pem, coordinator.pem, coordinator-key.pem.
    #[arg(long, env = "MESH_TLS_DIR")]
    tls_dir: PathBuf,
    /// Directory to keep runs and join tokens in (default: memory only).
    #[arg(long, env = "MESH_STORE")]
    store: Option<PathBuf>,
    /// Cluster inventory (nodes, pods, Services) as JSON; re-read when it changes.
    /// Needed for nodeport:, svc: and pod: targets and PROBE@pod:NS/NAME sources.
    #[arg(long, env = "MESH_INVENTORY")]
    inventory: Option<PathBuf>,
    /// Let operators capture full packets (`meshctl capture --payload`).
    /// Off by default: payloads can hold passwords and tokens, so captures
    /// keep 128 bytes of headers unless this is set.
    #[arg(long, env = "MESH_ALLOW_PAYLOAD_CAPTURE")]
    allow_payload_capture: bool,
    /// How often probes must send a heartbeat; three missed ones disconnect a probe.
    #[arg(long, env = "MESH_HEARTBEAT", default_value = "1s", value_parser = duration)]
    heartbeat: Duration,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "MESH_LOG_JSON")]
    log_json: bool,
    /// OpenTelemetry collector (OTLP/gRPC) to send run traces to, e.g.
    /// http://otel-collector:4317. Without it, the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT applies; OTEL_SERVICE_NAME and
    /// OTEL_RESOURCE_ATTRIBUTES are honoured.
    #[arg(long, env = "MESH_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics, liveness on
    /// /healthz (200 while the process runs) and readiness on /readyz (200
    /// once the gRPC services are served, else 503 and the reason).
    #[arg(long, env = "MESH_METRICS")]
    metrics: Option<SocketAddr>,
}

fn duration(s: &str) -> Result<Duration, String> {
    probemesh_model::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = match Telemetry::init(TelemetryConfig {
        service_name: "mesh-coordinator",
        json: args.log_json,
        otlp_endpoint: args.otlp_endpoint,
        resource: host_name().map(|h| ("host.name", h)).into_iter().collect(),
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mesh-coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = Settings {
        listen: args.listen,
        tls_dir: args.tls_dir,
        store: args.store,
        inventory: args.inventory,
        timing: LinkTiming {
            heartbeat: args.heartbeat,
            ..LinkTiming::default()
        },
        metrics: args.metrics,
        span_export: telemetry.span_export_stats().clone(),
        payload_policy: mesh_coordinator::state::PayloadPolicy {
            allowed: args.allow_payload_capture,
        },
    };
    let bound = match Bound::bind(settings).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mesh-coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    let served = bound.serve(shutdown_signal()).await;
    telemetry.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
