//! `mesh-coordinator`: see the crate docs of `mesh_coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_coordinator::etcd::{self, EtcdSettings, EtcdTls};
use mesh_coordinator::inventory::kube::ApiAccess;
use mesh_coordinator::policy::Rules;
use mesh_coordinator::server::{Bound, ClusterSource, Settings};
use mesh_coordinator::state::{LinkTiming, NodeEnrollment};
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
    /// It must take writes: at start a file is written, fsync'd and removed
    /// there, and a store that refuses it stops the coordinator (exit 2).
    /// Every run record is fsync'd; a run whose record cannot be written
    /// (disk full, read-only) fails with that error instead of reporting
    /// success.
    #[arg(long, env = "MESH_STORE")]
    store: Option<PathBuf>,
    /// etcd client URLs (http:// or https://, comma-separated): keep the
    /// state (runs, join tokens, revocations, signed certificates) in etcd,
    /// shared by every coordinator given the same endpoints and
    /// --etcd-prefix, in place of --store. The coordinator does not start
    /// unless a member answers; while etcd cannot be written, runs are
    /// refused (meshctl exits 3) rather than run unrecorded.
    #[arg(long, env = "MESH_ETCD", value_parser = etcd::parse_endpoints, value_name = "URL[,URL...]", conflicts_with = "store")]
    etcd: Option<etcd::Endpoints>,
    /// The CA of the etcd members' certificates (PEM), for https:// endpoints.
    #[arg(long, env = "MESH_ETCD_CA", requires = "etcd", requires_all = ["etcd_cert", "etcd_key"])]
    etcd_ca: Option<PathBuf>,
    /// This coordinator's client certificate for etcd (PEM).
    #[arg(long, env = "MESH_ETCD_CERT", requires = "etcd_ca")]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, env = "MESH_ETCD_KEY", requires = "etcd_ca")]
    etcd_key: Option<PathBuf>,
    /// Prefix of every key this mesh keeps in etcd (several meshes may
    /// share one etcd under different prefixes).
    #[arg(long, env = "MESH_ETCD_PREFIX", default_value = etcd::DEFAULT_PREFIX, value_parser = etcd::parse_prefix)]
    etcd_prefix: String,
    /// This coordinator's id among several sharing --etcd (unique per
    /// coordinator; default: host name and listen port). Shown as the
    /// holder of its probes in `meshctl probes`.
    #[arg(long, env = "MESH_ID", requires = "etcd")]
    id: Option<String>,
    /// The URL other coordinators reach this one at, https://HOST:PORT
    /// (HOST must be in the coordinator certificate's SANs: `meshctl certs
    /// init --coordinator-san HOST`). Needed with --etcd when --listen is
    /// 0.0.0.0; otherwise defaults to https://LISTEN_ADDRESS.
    #[arg(long, env = "MESH_ADVERTISE", requires = "etcd", value_name = "URL")]
    advertise: Option<String>,
    /// Cluster inventory (nodes, pods, Services) as JSON; re-read when it
    /// changes. For clusters without API access: with --kubeconfig or
    /// --in-cluster the inventory comes from the Kubernetes API instead.
    /// Needed for nodeport:, svc: and pod: targets and PROBE@pod:NS/NAME sources.
    #[arg(long, env = "MESH_INVENTORY", conflicts_with_all = ["kubeconfig", "in_cluster"])]
    inventory: Option<PathBuf>,
    /// Watch the cluster through the Kubernetes API, with this kubeconfig's
    /// current context (read-only access to nodes, pods, Services and
    /// EndpointSlices; see deploy/kubernetes for the ClusterRole).
    #[arg(long, env = "MESH_KUBECONFIG", conflicts_with = "in_cluster")]
    kubeconfig: Option<PathBuf>,
    /// Watch the cluster through the Kubernetes API with the pod's
    /// ServiceAccount (the coordinator runs in the cluster).
    #[arg(long, env = "MESH_IN_CLUSTER")]
    in_cluster: bool,
    /// Enroll node probes that present a projected token of this
    /// ServiceAccount (NAMESPACE/NAME, e.g. probemesh/mesh-probe): the token
    /// is checked with a TokenReview and the certificate names the node its
    /// pod runs on. Needs --kubeconfig or --in-cluster.
    #[arg(long, env = "MESH_ENROLL_SERVICE_ACCOUNT", value_parser = service_account)]
    enroll_service_account: Option<(String, String)>,
    /// The audience node probes' projected tokens must be issued for.
    #[arg(long, env = "MESH_ENROLL_AUDIENCE", default_value = "probemesh")]
    enroll_audience: String,
    /// Let operators capture full packets (`meshctl capture --payload`).
    /// Off by default: payloads can hold passwords and tokens, so captures
    /// keep 128 bytes of headers unless this is set.
    #[arg(long, env = "MESH_ALLOW_PAYLOAD_CAPTURE")]
    allow_payload_capture: bool,
    /// How often probes must send a heartbeat; three missed ones disconnect
    /// a probe. The trade-off: a probe that dies silently (process hung,
    /// network gone) is declared lost within 3 intervals (15 s at 5 s), and
    /// its reconnect is refused as a duplicate until then; each heartbeat
    /// costs the coordinator a message per probe (figures in
    /// docs/operations.md, "Scale").
    #[arg(long, env = "MESH_HEARTBEAT", default_value = "5s", value_parser = duration)]
    heartbeat: Duration,
    /// How often each idle probe's clock is exchanged (over the stream and
    /// over UDP). Runs that arm on the clock (captures) ask for a fresh
    /// burst first, so this only keeps `meshctl probes`' clock column and
    /// the clock metrics current; shorter costs every probe messages all
    /// the time. At least 100ms.
    #[arg(long, env = "MESH_CLOCK_INTERVAL", default_value = "30s", value_parser = clock_interval)]
    clock_interval: Duration,
    /// Lifetime of the probe certificates this coordinator signs (join,
    /// node enrollment, renewal). Probes renew over their stream at about
    /// 2/3 of it; a few seconds lets a test watch a renewal.
    #[arg(long, env = "MESH_PROBE_CERT_LIFETIME", default_value = "7d", value_parser = duration)]
    probe_cert_lifetime: Duration,
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
    /// Serve the read-only web view on https://ADDR:PORT/: the runs (live
    /// progress of running ones), each run's report, the latest mesh
    /// matrix. Off by default. Readers need an operator or viewer client
    /// certificate, or a token from `meshctl web-token`; see
    /// docs/operations.md ("Web view").
    #[arg(long, env = "MESH_WEB", value_name = "ADDR:PORT")]
    web: Option<SocketAddr>,
    /// Policy file (JSON): which roles may start which runs, at which
    /// targets beyond the cluster's and the probes' addresses, and how hard
    /// (minimum interval, runs at once per probe and per identity, a rate
    /// per identity, capture bytes per probe). Without it the safe defaults
    /// hold; see docs/operations.md ("Policy") and deploy/policy.example.json.
    #[arg(long, env = "MESH_POLICY")]
    policy: Option<PathBuf>,
    /// Append the audit log (one JSON line per Control call) here
    /// (default: STORE/audit.jsonl with --store, else the log).
    #[arg(long, env = "MESH_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
}

fn service_account(s: &str) -> Result<(String, String), String> {
    s.split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
        .ok_or_else(|| format!("'{s}' is not NAMESPACE/NAME (e.g. probemesh/mesh-probe)"))
}

fn duration(s: &str) -> Result<Duration, String> {
    probemesh_model::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// Least `--clock-interval`: the probe's own floor of the UDP exchange.
const MIN_CLOCK_INTERVAL: Duration = Duration::from_millis(100);

fn clock_interval(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < MIN_CLOCK_INTERVAL {
        return Err(format!(
            "must be at least {}ms: each probe would be asked for its clock faster than it answers",
            MIN_CLOCK_INTERVAL.as_millis()
        ));
    }
    Ok(d)
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
    let cluster = match (args.inventory, args.kubeconfig, args.in_cluster) {
        (Some(file), _, _) => ClusterSource::File(file),
        (None, Some(kubeconfig), _) => ClusterSource::Api(ApiAccess::Kubeconfig(kubeconfig)),
        (None, None, true) => ClusterSource::Api(ApiAccess::InCluster),
        (None, None, false) => ClusterSource::None,
    };
    if args.enroll_service_account.is_some() && !matches!(cluster, ClusterSource::Api(_)) {
        eprintln!(
            "mesh-coordinator: --enroll-service-account needs the Kubernetes API: add --kubeconfig FILE or --in-cluster"
        );
        return ExitCode::from(2);
    }
    let node_enrollment = args
        .enroll_service_account
        .map(|(namespace, service_account)| NodeEnrollment {
            namespace,
            service_account,
            audience: args.enroll_audience,
        });
    let policy = match &args.policy {
        Some(path) => match Rules::load(path) {
            Ok(rules) => rules,
            Err(e) => {
                eprintln!("mesh-coordinator: {e}");
                return ExitCode::from(2);
            }
        },
        None => Rules::default(),
    };
    let etcd = args.etcd.map(|etcd::Endpoints(endpoints)| EtcdSettings {
        tls: match (args.etcd_ca, args.etcd_cert, args.etcd_key) {
            (Some(ca), Some(cert), Some(key)) => Some(EtcdTls { ca, cert, key }),
            _ => None,
        },
        prefix: args.etcd_prefix,
        ..EtcdSettings::new(endpoints)
    });
    let settings = Settings {
        listen: args.listen,
        tls_dir: args.tls_dir,
        store: args.store,
        etcd,
        id: args.id,
        advertise: args.advertise,
        cluster,
        node_enrollment,
        timing: LinkTiming {
            heartbeat: args.heartbeat,
            clock_interval: args.clock_interval,
            ..LinkTiming::default()
        },
        metrics: args.metrics,
        web: args.web,
        span_export: telemetry.span_export_stats().clone(),
        payload_policy: mesh_coordinator::state::PayloadPolicy {
            allowed: args.allow_payload_capture,
        },
        probe_cert_lifetime: args.probe_cert_lifetime,
        policy,
        audit_log: args.audit_log,
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
