//! Assembles and runs the coordinator: TLS listener, the three services,
//! the liveness sweeper, and its readiness (`/readyz` on `--metrics`).
//!
//! Readiness is a set of named conditions that must all hold
//! ([`Readiness`]): `grpc` holds while the services are served. A component
//! that must be up before probes and meshctl are sent here (an inventory
//! that has to sync first) registers its own condition in [`Bound::bind`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use probemesh_proto::pb;
use probemesh_proto::pki::{CertAuthority, TlsDir};
use probemesh_proto::tls::{TlsIncoming, server_config};
use probemesh_telemetry::{
    Condition, Readiness, SpanExportStats, certificate_expiry_unix, http::serve_metrics,
};

use crate::clock_udp::UdpClock;
use crate::control::ControlService;
use crate::enroll::EnrollService;
use crate::error::{Error, Result};
use crate::inventory::InventorySource;
use crate::inventory::kube::{self, ApiAccess};
use crate::link::{LinkService, liveness_sweeper};
use crate::revocation::{FileStore, Revocations};
use crate::runs::RunStore;
use crate::state::{Coordinator, LinkTiming, NodeEnrollment, PayloadPolicy, SystemClock};
use crate::tokens::TokenStore;

/// How to run a coordinator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// coordinator.pem, coordinator-key.pem, ca.pem, ca-key.pem.
    pub tls_dir: PathBuf,
    /// Directory for runs and join tokens; `None` keeps them in memory.
    pub store: Option<PathBuf>,
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
    /// Span export counters to publish with the metrics.
    pub span_export: SpanExportStats,
    /// Whether operators may capture full payloads.
    pub payload_policy: PayloadPolicy,
    /// Lifetime of the probe certificates this coordinator signs.
    pub probe_cert_lifetime: std::time::Duration,
}

/// How long start-up waits for the Kubernetes API's first lists.
const INVENTORY_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
}

impl Bound {
    /// Loads certificates and stores and binds the listener.
    pub async fn bind(settings: Settings) -> Result<Self> {
        let readiness = Readiness::default();
        let serving = readiness.condition("grpc", "the gRPC services are not served yet");
        let dir = TlsDir::new(settings.tls_dir);
        let tls = server_config(&dir)?;
        let ca = CertAuthority::load(&dir)?;
        let (runs, tokens, revocations) = match settings.store {
            Some(path) => (
                RunStore::open(path.clone())?,
                TokenStore::open(path.clone())?,
                Revocations::open(Box::new(FileStore::new(path)))?,
            ),
            None => (
                RunStore::in_memory(),
                TokenStore::in_memory(),
                Revocations::in_memory(),
            ),
        };
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
            Coordinator::new(
                runs,
                tokens,
                ca,
                inventory,
                settings.timing,
                Arc::new(SystemClock),
            )
            .with_revocations(revocations)
            .with_probe_cert_lifetime(settings.probe_cert_lifetime)
            .with_payload_policy(settings.payload_policy)
            .with_node_enrollment(settings.node_enrollment)
            .with_listen_port(local_addr.port()),
        );
        if !synced {
            let state = state.clone();
            tokio::spawn(async move {
                while !state.inventory.synced(INVENTORY_SYNC_WAIT).await {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                tracing::info!("the Kubernetes API's first lists are in");
                listed.holds();
            });
        }
        let incoming = TlsIncoming::new(listener, tls);
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
            serve_metrics(addr, registry, readiness)
                .await
                .map_err(|e| Error::Listen {
                    op: "serve metrics on",
                    addr,
                    source: e.source,
                })?;
        }
        Ok(Self {
            incoming,
            state,
            local_addr,
            udp_clock,
            serving,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves; ready (the `grpc` condition) from
    /// now until then.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<()> {
        let serving = self.serving.clone();
        let shutdown = async move {
            shutdown.await;
            serving.fails("shutting down");
        };
        let sweeper = tokio::spawn(liveness_sweeper(self.state.clone()));
        let udp_server = self
            .udp_clock
            .clone()
            .map(|clock| tokio::spawn(clock.serve(self.state.clone())));
        tracing::info!(listen = %self.local_addr, udp_clock = self.udp_clock.is_some(), "coordinator serving");
        self.serving.holds();
        let result = tonic::transport::Server::builder()
            .add_service(pb::probe_link_server::ProbeLinkServer::new(
                LinkService::new(self.state.clone(), self.udp_clock),
            ))
            .add_service(pb::control_server::ControlServer::new(ControlService::new(
                self.state.clone(),
            )))
            .add_service(pb::enrollment_server::EnrollmentServer::new(
                EnrollService::new(self.state),
            ))
            .serve_with_incoming_shutdown(self.incoming, shutdown)
            .await;
        sweeper.abort();
        if let Some(task) = udp_server {
            task.abort();
        }
        result.map_err(Error::from)
    }
}
