//! `mesh-probe`: see the crate docs of `mesh_probe`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_probe::Error;
use mesh_probe::coordinators::Coordinators;
use mesh_probe::link::{self, ProbeSettings};
use mesh_probe::metrics::Metrics;
use probemesh_proto::pb;
use probemesh_proto::pki::TlsDir;
use probemesh_proto::token::JoinToken;
use probemesh_telemetry::http::serve_metrics;
use probemesh_telemetry::{
    Readiness, Telemetry, TelemetryConfig, certificate_expiry_unix, host_name,
};
use tokio_util::sync::CancellationToken;

/// The probemesh probe daemon: dials the coordinator over mTLS and runs the
/// network tests it is asked to (ping, TCP connect, ...), from this host's
/// network namespace.
///
/// Nodes get their certificate from `meshctl certs issue --role probe`;
/// external hosts enroll once with `mesh-probe join` and a token from
/// `meshctl join-token create`.
#[derive(Debug, Parser)]
#[command(version, about, long_about, subcommand_negates_reqs = true)]
struct Args {
    /// Probe name; the certificate DIR/NAME.pem must be issued for it. A
    /// node's probe is named after its node (in a DaemonSet:
    /// `--name $(NODE_NAME)` from spec.nodeName).
    #[arg(long, env = "MESH_NAME", required = true)]
    name: Option<String>,
    /// A projected ServiceAccount token (audience `probemesh`): when
    /// DIR/NAME.pem is missing or expires within a day, enroll with it first;
    /// the coordinator reviews the token and names the certificate after the
    /// node the token's pod runs on. Needs --ca-file.
    #[arg(long, env = "MESH_KUBE_TOKEN_FILE", requires = "ca_file")]
    kube_token_file: Option<PathBuf>,
    /// The CA that signed the coordinator's certificate (PEM), trusted for
    /// enrollment with --kube-token-file.
    #[arg(long, env = "MESH_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Coordinator URL, or several comma-separated
    /// (https://A:7443,https://B:7443): the probe attaches to any live one,
    /// in a random order, moving to the next on a failure or a GoAway.
    /// `join` and node enrollment try each in turn until one answers.
    #[arg(
        long,
        env = "MESH_COORDINATOR",
        global = true,
        default_value = "https://127.0.0.1:7443",
        value_parser = parse_coordinators
    )]
    coordinator: Coordinators,
    /// Directory holding ca.pem and NAME.pem / NAME-key.pem.
    #[arg(
        long,
        env = "MESH_TLS_DIR",
        global = true,
        default_value = "/etc/probemesh/tls"
    )]
    tls_dir: PathBuf,
    /// A node of the cluster, or an external host.
    #[arg(long, env = "MESH_ROLE", global = true, value_enum, default_value_t = Role::Node)]
    role: Role,
    /// Labels shown in `meshctl probes`, as k=v,k=v.
    #[arg(long, env = "MESH_LABELS", global = true, value_parser = parse_labels, default_value = "")]
    labels: BTreeMap<String, String>,
    /// Log as JSON lines.
    #[arg(long, env = "MESH_LOG_JSON", global = true)]
    log_json: bool,
    /// OpenTelemetry collector (OTLP/gRPC) to send task spans to, e.g.
    /// http://otel-collector:4317. Without it, the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT applies; OTEL_SERVICE_NAME and
    /// OTEL_RESOURCE_ATTRIBUTES are honoured.
    #[arg(long, env = "MESH_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics, liveness on
    /// /healthz (200 while the process runs) and readiness on /readyz (200
    /// while the stream to the coordinator is up, else 503 and the reason).
    #[arg(long, env = "MESH_METRICS", global = true)]
    metrics: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this host with a join token, then run as that probe.
    ///
    /// Generates a key locally, sends a CSR to the coordinator over TLS
    /// pinned to the CA fingerprint in the token, stores the issued
    /// certificate in --tls-dir, and (unless --enroll-only) starts the probe.
    Join {
        /// The token printed by `meshctl join-token create --name NAME`.
        #[arg(long, env = "MESH_JOIN_TOKEN")]
        token: String,
        /// Store the certificate and exit instead of running the probe.
        #[arg(long)]
        enroll_only: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    Node,
    External,
}

fn parse_coordinators(s: &str) -> Result<Coordinators, String> {
    Coordinators::parse(s).map_err(|e| e.to_string())
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("label '{kv}' must be KEY=VALUE"))
        })
        .collect()
}

// One thread runs the whole probe: its work is I/O (sockets, timers, the
// link's TLS) and captures run on threads of their own, so a second worker
// buys nothing but cross-thread wake-ups (a futex wake and an idle worker
// spinning up for every timer, datagram and progress message), which cost
// a ping more CPU than its echoes. The deployment's CPU limit is one core.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let probe_name = match &args.command {
        Some(Command::Join { token, .. }) => {
            token.parse::<JoinToken>().ok().map(|t| t.name.to_string())
        }
        None => args.name.clone(),
    };
    let role = match args.command {
        Some(Command::Join { .. }) => Role::External,
        None => args.common.role,
    };
    let telemetry = match Telemetry::init(TelemetryConfig {
        service_name: "mesh-probe",
        json: args.common.log_json,
        otlp_endpoint: args.common.otlp_endpoint.clone(),
        resource: resource(probe_name.as_deref(), role),
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mesh-probe: {e}");
            return ExitCode::from(2);
        }
    };
    let metrics = Metrics::default();
    let code = run_probe(args, metrics, &telemetry).await;
    telemetry.shutdown().await;
    code
}

/// Resource attributes of this probe's spans: `host.name`,
/// `probemesh.probe.name`, and on a node `k8s.node.name` (`K8S_NODE_NAME`,
/// else the probe name: node probes are named after their node).
fn resource(name: Option<&str>, role: Role) -> Vec<(&'static str, String)> {
    let mut attrs: Vec<(&'static str, String)> =
        host_name().map(|h| ("host.name", h)).into_iter().collect();
    if let Some(name) = name {
        attrs.push(("probemesh.probe.name", name.to_owned()));
    }
    if matches!(role, Role::Node) {
        let node = std::env::var("K8S_NODE_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| name.map(str::to_owned));
        if let Some(node) = node {
            attrs.push(("k8s.node.name", node));
        }
    }
    attrs
}

/// The probe proper, once telemetry is up.
async fn run_probe(args: Args, metrics: Metrics, telemetry: &Telemetry) -> ExitCode {
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let common = args.common;
    let (name, role) = match args.command {
        Some(Command::Join { token, enroll_only }) => {
            let mut outcome = None;
            for url in common.coordinator.in_order() {
                let attempt =
                    mesh_probe::join::join(url, &token, TlsDir::new(common.tls_dir.clone())).await;
                let done = attempt.as_ref().map_or_else(Error::is_permanent, |_| true);
                outcome = Some(attempt);
                if done {
                    break;
                }
                tracing::warn!(
                    coordinator = url,
                    "join failed; trying the next coordinator"
                );
            }
            let Some(outcome) = outcome else {
                return ExitCode::from(2);
            };
            match outcome {
                Ok(enrolled) if enroll_only => {
                    println!(
                        "enrolled as '{}'; start the probe with: mesh-probe --name {} --coordinator {} --tls-dir {} --role external",
                        enrolled.name,
                        enrolled.name,
                        common.coordinator.joined(),
                        common.tls_dir.display()
                    );
                    return ExitCode::SUCCESS;
                }
                Ok(enrolled) => (enrolled.name, Role::External),
                Err(e) => {
                    eprintln!("mesh-probe join: {e}");
                    return ExitCode::from(if e.is_permanent() { 2 } else { 4 });
                }
            }
        }
        None => {
            let name = args.name.unwrap_or_default();
            if let (Some(token_file), Some(ca_file)) = (&args.kube_token_file, &args.ca_file) {
                let dir = TlsDir::new(common.tls_dir.clone());
                if let Err(code) = enroll_node_if_needed(
                    &common.coordinator,
                    &name,
                    token_file,
                    ca_file,
                    dir,
                    &shutdown,
                )
                .await
                {
                    return code;
                }
            }
            (name, common.role)
        }
    };
    let readiness = Readiness::default();
    let attached = readiness.condition("coordinator", "not attached to the coordinator yet");
    if let Some(addr) = common.metrics {
        let dir = TlsDir::new(common.tls_dir.clone());
        for (label, path) in [("probe", dir.cert(&name)), ("ca", dir.ca_cert())] {
            if let Some(not_after) = certificate_expiry_unix(&path) {
                metrics.set_certificate_expiry(label, not_after);
            }
        }
        let registry = metrics.registry(telemetry.span_export_stats());
        if let Err(e) = serve_metrics(addr, registry, readiness).await {
            eprintln!("mesh-probe: {e}");
            return ExitCode::from(2);
        }
    }
    let settings = ProbeSettings {
        name,
        coordinators: common.coordinator,
        tls_dir: common.tls_dir,
        role: match role {
            Role::Node => pb::ProbeRole::Node,
            Role::External => pb::ProbeRole::External,
        },
        labels: common.labels,
        metrics,
        attached,
    };
    match link::run(settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-probe: {e}");
            ExitCode::from(2)
        }
    }
}

/// How many times a node tries to enroll before giving up (its pod then
/// restarts with the kubelet's backoff).
const ENROLL_ATTEMPTS: u32 = 8;
/// A certificate expiring sooner than this is renewed at start.
const RENEW_WITHIN_SECS: i64 = 24 * 3600;

/// Enrolls node `name` by ServiceAccount token unless DIR/NAME.pem is there
/// and good for another day; retries transient failures a bounded number
/// of times.
async fn enroll_node_if_needed(
    coordinators: &Coordinators,
    name: &str,
    token_file: &std::path::Path,
    ca_file: &std::path::Path,
    dir: TlsDir,
    shutdown: &CancellationToken,
) -> Result<(), ExitCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if certificate_expiry_unix(&dir.cert(name)).is_some_and(|t| t - now > RENEW_WITHIN_SECS) {
        return Ok(());
    }
    let mut backoff = mesh_probe::backoff::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(15),
    );
    // Each attempt goes to the next coordinator of the list.
    for (attempt, coordinator) in (1..=ENROLL_ATTEMPTS).zip(coordinators.in_order().cycle()) {
        match mesh_probe::join::enroll_node(coordinator, name, token_file, ca_file, dir.clone())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_permanent() || attempt == ENROLL_ATTEMPTS => {
                eprintln!("mesh-probe: enrolling node '{name}': {e}");
                return Err(ExitCode::from(if e.is_permanent() { 2 } else { 4 }));
            }
            Err(e) => {
                let delay = backoff.next_delay(rand::random::<f64>());
                tracing::warn!(attempt, coordinator, error = %e, ?delay, "node enrollment failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Err(ExitCode::SUCCESS),
                }
            }
        }
    }
    Ok(())
}

async fn watch_signals(shutdown: CancellationToken) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    shutdown.cancel();
}
