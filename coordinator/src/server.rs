//! Assembles and runs the coordinator: TLS listener, the four services,
//! the liveness sweeper, and its readiness (`/readyz` on `--metrics`).
//!
//! Shutdown ([`Bound::serve`]'s signal) is bounded, about 4 s at most: stop
//! accepting and taking runs; give runs in flight [`RUN_GRACE`], then end
//! them ("coordinator shutting down"); send every probe a GoAway and drop
//! its stream (with `--etcd`, revoke the membership lease: every probe name
//! frees at once); stop the UDP clock, the sweeper and the metrics endpoint;
//! give open connections [`CONNECTIONS_CLOSE`] to close, then leave them.
//!
//! Readiness is a set of named conditions that must all hold
//! ([`Readiness`]): `grpc` holds while the services are served. A component
//! that must be up before probes and meshctl are sent here (an inventory
//! that has to sync first) registers its own condition in [`Bound::bind`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use probemesh_proto::pb;
use probemesh_proto::pki::{COORDINATOR_NAME, CertAuthority, TlsDir};
use probemesh_proto::tls::{TlsIncoming, server_config};
use probemesh_telemetry::http::{MetricsServer, serve_metrics};
use probemesh_telemetry::{Condition, Readiness, SpanExportStats, certificate_expiry_unix};
use tokio_util::sync::CancellationToken;

use crate::clock_udp::UdpClock;
use crate::control::{ControlService, follow_revocations};
use crate::enroll::EnrollService;
use crate::error::{Error, Result};
use crate::etcd::EtcdSettings;
use crate::inventory::InventorySource;
use crate::inventory::kube::{self, ApiAccess};
use crate::link::{LinkService, liveness_sweeper};
use crate::mesh::membership::{Member, Membership};
use crate::peer::PeerService;
use crate::policy::audit::AuditLog;
use crate::policy::{OwnPorts, Policy, Rules};
use crate::revocation::Revocations;
use crate::state::{
    Coordinator, LinkTiming, NodeEnrollment, PayloadPolicy, SystemClock, WallClock as _,
};
use crate::store::StateStore;
use crate::store::etcd::EtcdStore;
use crate::store::local::LocalStore;
use crate::web::{WebListener, WebServer};

/// How to run a coordinator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// coordinator.pem, coordinator-key.pem, ca.pem, ca-key.pem.
    pub tls_dir: PathBuf,
    /// Directory for runs and join tokens; `None` keeps them in memory.
    pub store: Option<PathBuf>,
    /// etcd, when the state is shared by several coordinators (`--etcd`).
    pub etcd: Option<EtcdSettings>,
    /// This coordinator's id among several (`--id`); default: host name and
    /// listen port.
    pub id: Option<String>,
    /// Where other coordinators reach this one (`--advertise`); default:
    /// `https://LISTEN_IP:PORT` (required when listening on 0.0.0.0).
    pub advertise: Option<String>,
    /// Where the cluster inventory comes from.
    pub cluster: ClusterSource,
    /// Which ServiceAccount's tokens enroll node probes, and for which
    /// audience (Kubernetes only).
    pub node_enrollment: Option<NodeEnrollment>,
    /// Probe link timing.
    pub timing: LinkTiming,
    /// Where to serve Prometheus metrics (`/metrics`) and health
    /// (`/healthz`, `/readyz`); `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// Where to serve the read-only web view (`--web`), if anywhere.
    pub web: Option<SocketAddr>,
    /// Span export counters to publish with the metrics.
    pub span_export: SpanExportStats,
    /// Whether operators may capture full payloads.
    pub payload_policy: PayloadPolicy,
    /// Lifetime of the probe certificates this coordinator signs.
    pub probe_cert_lifetime: std::time::Duration,
    /// What runs may aim at and how hard (`--policy`).
    pub policy: Rules,
    /// Where the audit log goes; `None`: `STORE/audit.jsonl`, or the log
    /// without a store.
    pub audit_log: Option<PathBuf>,
}

/// How long runs in flight may go on once shutdown begins.
pub const RUN_GRACE: Duration = Duration::from_secs(2);
/// How long ended runs may take to record themselves.
const RUNS_END_WAIT: Duration = Duration::from_secs(1);
/// How long open connections may take to close before the coordinator
/// leaves without them.
pub const CONNECTIONS_CLOSE: Duration = Duration::from_secs(1);

/// How long start-up waits for the Kubernetes API's first lists.
const INVENTORY_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Where the cluster inventory comes from.
#[derive(Debug, Clone, Default)]
pub enum ClusterSource {
    /// None: Kubernetes-shaped targets are refused.
    #[default]
    None,
    /// An inventory file, re-read when it changes.
    File(PathBuf),
    /// The Kubernetes API, watched.
    Api(ApiAccess),
}

/// A bound, not yet serving coordinator: lets callers learn the port
/// (`--listen 127.0.0.1:0`) before serving.
#[derive(Debug)]
pub struct Bound {
    incoming: TlsIncoming,
    state: Arc<Coordinator>,
    local_addr: SocketAddr,
    udp_clock: Option<Arc<UdpClock>>,
    /// Holds from [`Bound::serve`] until shutdown begins.
    serving: Condition,
    /// The metrics and health endpoint, when `--metrics` asks for one.
    metrics: Option<MetricsServer>,
    /// Membership in etcd, with several coordinators (`--etcd`).
    membership: Option<Arc<Membership>>,
    /// The web view, when `--web` asks for one.
    web: Option<WebServer>,
}

impl Bound {
    /// Loads certificates and stores and binds the listener.
    pub async fn bind(settings: Settings) -> Result<Self> {
        let readiness = Readiness::default();
        let serving = readiness.condition("grpc", "the gRPC services are not served yet");
        let dir = TlsDir::new(settings.tls_dir);
        let tls = server_config(&dir)?;
        let ca = CertAuthority::load(&dir)?;
        let audit_path = settings
            .audit_log
            .clone()
            .or_else(|| settings.store.as_ref().map(|s| s.join("audit.jsonl")));
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| Error::Listen {
                op: "listen on",
                addr: settings.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Listen {
            op: "read address of",
            addr: settings.listen,
            source,
        })?;
        let web = match settings.web {
            Some(addr) => Some(WebListener::bind(addr).await?),
            None => None,
        };
        let started_unix_ms = SystemClock.now_unix_ms();
        let (store, etcd): (Arc<dyn StateStore>, _) = match (&settings.etcd, settings.store) {
            (Some(etcd), _) => {
                let client = crate::etcd::connect(etcd).await?;
                let member = member(settings.id, settings.advertise, local_addr)?;
                let store =
                    EtcdStore::new(client.clone(), etcd, member.incarnation(started_unix_ms));
                (Arc::new(store), Some((etcd.clone(), client, member)))
            }
            (None, Some(path)) => (Arc::new(LocalStore::open(path)?), None),
            (None, None) => (Arc::new(LocalStore::in_memory()), None),
        };
        let revocations = Revocations::new(store.revocations().await?);
        tracing::info!(store = %store.describe(), "state store");
        let audit = match &audit_path {
            Some(path) => AuditLog::open(path).map_err(|source| Error::Store {
                op: "open the audit log",
                path: path.clone(),
                source,
            })?,
            None => AuditLog::default(),
        };
        // UDP on the same address and port carries the kernel-timestamped
        // clock exchange; without it the stream's exchange is the only one.
        let udp_clock = match UdpClock::bind(local_addr, settings.timing.clock_interval).await {
            Ok(clock) => Some(Arc::new(clock)),
            Err(error) => {
                tracing::warn!(addr = %local_addr, %error, "clock exchange over UDP unavailable; probes use the stream's exchange only");
                None
            }
        };
        let inventory = match settings.cluster {
            ClusterSource::None => InventorySource::none(),
            ClusterSource::File(path) => InventorySource::file(path)?,
            ClusterSource::Api(access) => InventorySource::kubernetes(kube::client(&access).await?),
        };
        tracing::info!(source = %inventory.describe(), "cluster inventory");
        let listed = readiness.condition(
            "inventory",
            "the Kubernetes API's first lists are not in yet",
        );
        let synced = inventory.synced(INVENTORY_SYNC_WAIT).await;
        if synced {
            listed.holds();
        } else {
            tracing::warn!(
                waited = ?INVENTORY_SYNC_WAIT,
                "the Kubernetes API's first lists are not in yet; serving anyway: nodeport:, svc: and pod: targets fail until they are"
            );
        }
        let state = Arc::new(
            Coordinator::new(store, ca, inventory, settings.timing, Arc::new(SystemClock))
                .with_revocations(revocations)
                .with_probe_cert_lifetime(settings.probe_cert_lifetime)
                .with_payload_policy(settings.payload_policy)
                .with_node_enrollment(settings.node_enrollment)
                .with_listen_port(local_addr.port())
                .with_web_port(web.as_ref().map_or(0, |w| w.addr().port()))
                .with_policy(Policy::new(
                    settings.policy,
                    OwnPorts {
                        listen: local_addr,
                        metrics: settings.metrics,
                        web: web.as_ref().map(WebListener::addr),
                    },
                    audit,
                )),
        );
        if !synced {
            let state = state.clone();
            tokio::spawn(async move {
                while !state.inventory.synced(INVENTORY_SYNC_WAIT).await {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                tracing::info!("the Kubernetes API's first lists are in");
                listed.holds();
            });
        }
        let membership = match etcd {
            Some((etcd, client, member)) => {
                let peer_tls = probemesh_proto::tls::client_config(&dir, COORDINATOR_NAME)?;
                Some(Membership::join(&etcd, client, member, started_unix_ms, peer_tls).await?)
            }
            None => None,
        };
        let web = web.map(|w| w.serve(&tls, state.clone()));
        let incoming = TlsIncoming::new(listener, tls);
        let mut metrics = None;
        if let Some(addr) = settings.metrics {
            for (name, path) in [
                ("coordinator", dir.cert("coordinator")),
                ("ca", dir.ca_cert()),
            ] {
                if let Some(not_after) = certificate_expiry_unix(&path) {
                    state.metrics.set_certificate_expiry(name, not_after);
                }
            }
            let registry = state
                .metrics
                .registry(incoming.refused_handshakes(), &settings.span_export);
            let server = serve_metrics(addr, registry, readiness)
                .await
                .map_err(|e| Error::Listen {
                    op: "serve metrics on",
                    addr,
                    source: e.source,
                })?;
            metrics = Some(server);
        }
        Ok(Self {
            web,
            incoming,
            state,
            local_addr,
            udp_clock,
            serving,
            metrics,
            membership,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then shuts down within about 4 s
    /// (see the module docs); ready (the `grpc` condition) until then.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<()> {
        let Self {
            incoming,
            state,
            local_addr,
            udp_clock,
            serving,
            metrics,
            membership,
            web,
        } = self;
        let sweeper = tokio::spawn(liveness_sweeper(state.clone()));
        let revocation_follower = state
            .store
            .follow_revocations()
            .map(|rx| tokio::spawn(follow_revocations(state.clone(), rx)));
        let member_task = membership
            .clone()
            .map(|m| tokio::spawn(m.run(state.clone())));
        let udp_server = udp_clock
            .clone()
            .map(|clock| tokio::spawn(clock.serve(state.clone())));
        tracing::info!(listen = %local_addr, udp_clock = udp_clock.is_some(), "coordinator serving");
        serving.holds();
        let stop_accepting = CancellationToken::new();
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::probe_link_server::ProbeLinkServer::new(
                    LinkService::new(state.clone(), udp_clock, membership.clone()),
                ))
                .add_service(pb::control_server::ControlServer::new(ControlService::new(
                    state.clone(),
                )))
                .add_service(pb::enrollment_server::EnrollmentServer::new(
                    EnrollService::new(state.clone()),
                ))
                .add_service(pb::peer_server::PeerServer::new(PeerService::new(
                    state.clone(),
                )))
                .serve_with_incoming_shutdown(incoming, stop_accepting.clone().cancelled_owned()),
        );
        let result = tokio::select! {
            ended = &mut server => Some(ended),
            () = shutdown => None,
        };
        let result = match result {
            // The server failed by itself.
            Some(ended) => served(ended),
            None => {
                serving.fails("shutting down");
                // The server task drops the listener at once; its open
                // connections get an HTTP/2 GOAWAY and may finish.
                stop_accepting.cancel();
                drain(&state).await;
                // The probes just told to go away find their names free on
                // the other coordinators at once.
                if let Some(task) = &member_task {
                    task.abort();
                }
                if let Some(membership) = &membership {
                    membership.leave().await;
                }
                match tokio::time::timeout(CONNECTIONS_CLOSE, &mut server).await {
                    Ok(ended) => served(ended),
                    Err(_) => {
                        tracing::info!(waited = ?CONNECTIONS_CLOSE, "leaving connections still open");
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        sweeper.abort();
        if let Some(task) = revocation_follower {
            task.abort();
        }
        if let Some(task) = member_task {
            task.abort();
        }
        if let Some(task) = udp_server {
            task.abort();
        }
        if let Some(metrics) = metrics {
            metrics.stop().await;
        }
        if let Some(web) = web {
            web.stop().await;
        }
        tracing::info!("coordinator stopped");
        result
    }
}

/// This coordinator as the others see it: `id` (default: host name and
/// port) and `advertise` (default: the listen address, which must then be
/// a specific one).
fn member(id: Option<String>, advertise: Option<String>, listen: SocketAddr) -> Result<Member> {
    let url = match advertise {
        Some(url) => url,
        None if listen.ip().is_unspecified() => {
            return Err(Error::InvalidRequest(format!(
                "--etcd: other coordinators cannot reach {listen}; pass --advertise https://HOST:{} (an address in the coordinator certificate's SANs)",
                listen.port()
            )));
        }
        None => format!("https://{listen}"),
    };
    probemesh_proto::tls::coordinator_host(&url)?;
    let id = id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), listen.port())
    });
    Ok(Member { id, url })
}

/// The server task's outcome as the coordinator's.
fn served(
    ended: std::result::Result<
        std::result::Result<(), tonic::transport::Error>,
        tokio::task::JoinError,
    >,
) -> Result<()> {
    match ended {
        Ok(served) => served.map_err(Error::from),
        Err(e) => Err(Error::ServerTask(e.to_string())),
    }
}

/// Stops taking runs, gives those in flight [`RUN_GRACE`], ends the rest,
/// then tells every probe to reconnect and drops its stream.
async fn drain(state: &Coordinator) {
    state.shutdown.begin();
    let in_flight = state.shutdown.runs_in_flight();
    if in_flight > 0 {
        tracing::info!(runs = in_flight, grace = ?RUN_GRACE, "shutting down: waiting for runs in flight");
    }
    if !state.shutdown.runs_finished(RUN_GRACE).await {
        tracing::warn!(
            runs = state.shutdown.runs_in_flight(),
            "ending runs still in flight: coordinator shutting down"
        );
        state.shutdown.end_runs();
        if !state.shutdown.runs_finished(RUNS_END_WAIT).await {
            tracing::warn!(
                runs = state.shutdown.runs_in_flight(),
                "runs did not record their end in time"
            );
        }
    }
    let probes = state.send_every_probe_away("coordinator shutting down");
    tracing::info!(probes, "told every probe to reconnect");
}
