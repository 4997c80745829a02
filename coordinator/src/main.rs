//! `mesh-coordinator`: see the crate docs of `mesh_coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_coordinator::server::{Bound, Settings};
use mesh_coordinator::state::LinkTiming;

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
    /// How often probes must send a heartbeat; three missed ones disconnect a probe.
    #[arg(long, env = "MESH_HEARTBEAT", default_value = "1s", value_parser = duration)]
    heartbeat: Duration,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "MESH_LOG_JSON")]
    log_json: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    probemesh_proto::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    probemesh_proto::telemetry::init_logging(args.log_json);
    let settings = Settings {
        listen: args.listen,
        tls_dir: args.tls_dir,
        store: args.store,
        inventory: args.inventory,
        timing: LinkTiming {
            heartbeat: args.heartbeat,
            ..LinkTiming::default()
        },
    };
    let bound = match Bound::bind(settings).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mesh-coordinator: {e}");
            return ExitCode::from(2);
        }
    };
    match bound.serve(shutdown_signal()).await {
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
